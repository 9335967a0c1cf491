"""Paths SimpleITK can take: a file name that is not valid UTF-8 makes ITK abort the whole process.

Such names happen (files copied from old systems or other locales); Python keeps their bytes, ITK does not. A path
with one is reached through links with plain names in a temporary folder, so that its case is read like any other.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from efficientscn.atomic import encodes_as_utf8


def itk_can_take(name: str) -> bool:
    """Whether SimpleITK can take this path or name: it must encode as UTF-8 (no undecodable bytes)."""
    return encodes_as_utf8(name)


DETACHED_HEADERS = (".mhd", ".nhdr")
"""Formats whose header names a separate data file, which must be reachable beside the header's link."""


def _suffix(name: str) -> str:
    return ".nii.gz" if name.lower().endswith(".nii.gz") else os.path.splitext(name)[1]


@contextlib.contextmanager
def itk_path(path: Path) -> Iterator[Path]:
    """`path` itself, or, if it or (for a folder) a file in it has a name ITK cannot take, a link to it (a folder of
    links to its files) with plain names, valid inside the block."""
    entries = sorted(path.iterdir()) if path.is_dir() else []
    if itk_can_take(str(path)) and all(itk_can_take(entry.name) for entry in entries):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="efficientscn-itk-") as folder:
        if not path.is_dir():
            link = Path(folder) / f"image{_suffix(path.name)}"
            link.symlink_to(path.absolute())
            if _suffix(path.name).lower() in DETACHED_HEADERS and path.parent.is_dir():
                for sibling in path.parent.iterdir():  # the header names its data file beside it
                    if itk_can_take(sibling.name) and sibling.name != link.name:
                        (Path(folder) / sibling.name).symlink_to(sibling.absolute())
            yield link
            return
        for index, entry in enumerate(entries):
            name = entry.name if itk_can_take(entry.name) else f"entry{index:05d}{_suffix(entry.name)}"
            (Path(folder) / name).symlink_to(entry.absolute())
        yield Path(folder)
