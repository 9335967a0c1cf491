"""The per-user cache of inference: imported original models and frozen graphs, found again by content."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from efficientscn.model.savedmodel import METADATA_FILE


def cache_root() -> Path:
    """Where converted models and frozen graphs are kept: $EFFICIENTSCN_CACHE, else $XDG_CACHE_HOME/efficientscn,
    else ~/.cache/efficientscn."""
    if os.environ.get("EFFICIENTSCN_CACHE"):
        return Path(os.environ["EFFICIENTSCN_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "efficientscn"
    try:
        return Path.home() / ".cache" / "efficientscn"
    except RuntimeError:  # no home folder (a service user): the system's temporary folder
        return Path(tempfile.gettempdir()) / "efficientscn-cache"


def fingerprint(folder: Path) -> str:
    """A short content hash of a SavedModel folder: its graph, its variables' files and our export metadata if it
    has any (links followed)."""
    digest = hashlib.sha256()
    paths = [folder / "saved_model.pb", *sorted((folder / "variables").iterdir())]
    if (folder / METADATA_FILE).is_file():
        paths.append(folder / METADATA_FILE)
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


STALE_SECONDS = 24 * 3600
"""Hidden files and folders in the cache older than this are left over by a killed run, and removed."""


def remove_stale(folder: Path, pattern: str = ".*") -> None:
    """Remove what matches `pattern` in `folder` (hidden work files and folders) if older than `STALE_SECONDS`."""
    for leftover in folder.glob(pattern):
        with contextlib.suppress(OSError):  # another run may be removing it too; a cache we cannot tidy still works
            if time.time() - leftover.stat().st_mtime > STALE_SECONDS:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
