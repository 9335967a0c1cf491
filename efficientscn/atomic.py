"""Atomic file output: a file is either absent, as it was, or complete; never half-written."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NAME_MAX = 255
"""The longest file name, in bytes, of the file systems in use (ext4, XFS, APFS, NTFS)."""


def encodes_as_utf8(name: str) -> bool:
    """Whether a path or name encodes as UTF-8 (no undecodable bytes): what libraries that take paths as text need
    (ITK aborts the whole process on any other)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, suffix: str = "", overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary path beside `path`; when the block succeeds, it becomes `path` in one step.

    `suffix` is kept at the end of the temporary name for writers that choose the format by extension. An
    existing `path` raises FileExistsError unless `overwrite` is set, also one that another writer created while
    the block ran; on any error the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    exists = f"{path}: already exists (pass overwrite to replace it)"
    if path.exists() and not overwrite:
        raise FileExistsError(exists)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{_temporary_stem(path, suffix)}.{uuid.uuid4().hex[:_TAG_LENGTH]}.partial{suffix}")
    try:
        yield temporary
        if overwrite:
            os.replace(temporary, path)
        else:
            _create(temporary, path, exists)
    finally:
        temporary.unlink(missing_ok=True)


_TAG_LENGTH = 12
"""Hex digits of the random tag that keeps two writers' temporary files apart."""


def _temporary_stem(path: Path, suffix: str) -> str:
    """The readable part of the temporary names of `path`: its name without `suffix`, or a plain word where it is
    not UTF-8 (ITK could not take it), shortened so that the whole temporary name stays within NAME_MAX bytes."""
    stem = path.name[: len(path.name) - len(suffix)] if suffix and path.name.endswith(suffix) else path.name
    tail = len(os.fsencode(f"..{'0' * _TAG_LENGTH}.partial{suffix}"))
    if encodes_as_utf8(stem) and len(os.fsencode(stem)) + tail <= NAME_MAX:
        return stem
    # a hash of the whole name keeps two such outputs apart (leftover_temporaries must never take another's)
    digest = "-" + hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
    plain = stem if encodes_as_utf8(stem) else "output"
    while len(os.fsencode(plain + digest)) + tail > NAME_MAX:
        plain = plain[:-1]
    return plain + digest


def leftover_temporaries(path: str | os.PathLike[str], suffix: str = "") -> list[Path]:
    """Temporary files `atomic_output(path, suffix=suffix)` left behind (a process killed mid-write): only the
    caller knows whether another writer is using one right now."""
    path = Path(path)
    pattern = re.compile(
        rf"^\.{re.escape(_temporary_stem(path, suffix))}\.[0-9a-f]{{{_TAG_LENGTH}}}\.partial{re.escape(suffix)}$"
    )
    if not path.parent.is_dir():
        return []
    return sorted(entry for entry in path.parent.iterdir() if pattern.match(entry.name))


def _create(temporary: Path, path: Path, exists: str) -> None:
    """Give `temporary` the name `path` unless a file of that name appeared meanwhile (another writer's)."""
    try:
        os.link(temporary, path)  # fails, atomically, if `path` exists
    except FileExistsError:
        raise FileExistsError(exists) from None
    except OSError:  # a filesystem without hard links: the last check and the rename leave a moment's gap
        if path.exists():
            raise FileExistsError(exists) from None
        os.replace(temporary, path)


def ensure_writable_folder(path: str | os.PathLike[str]) -> Path:
    """Create `path` if needed and check that files can be written there, before any long work starts.

    Raises `InputError` naming the folder when it is a file, cannot be created, or is read-only.
    """
    from efficientscn.errors import InputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: not a folder; expected an output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise InputError(f"{path}: cannot write here ({error.strerror or error})") from error
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str, *, overwrite: bool = False, suffix: str = "") -> Path:
    """Write a text file (UTF-8, LF line endings) atomically; see `atomic_output`."""
    with atomic_output(path, suffix=suffix, overwrite=overwrite) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)
