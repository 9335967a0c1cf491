"""Locks between runs: two `predict` runs on one output folder never segment the same case at once."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from efficientscn.atomic import NAME_MAX

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def case_lock(label: Path) -> Iterator[bool]:
    """Hold the case whose label goes to `label` while inside; yields False (holding nothing) if another run does.

    The lock is `flock` on a hidden `.<label name>.lock` beside the label, removed on leaving; the kernel releases it
    when a process dies, so a killed run leaves no case locked.
    """
    name = f".{label.name}.lock"
    if len(os.fsencode(name)) > NAME_MAX:
        name = f".{hashlib.sha256(os.fsencode(label.name)).hexdigest()[:32]}.lock"
    lock_path = label.with_name(name)
    for _ in range(LOCK_ATTEMPTS):
        descriptor = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            except OSError as error:
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                    raise
                logger.warning(
                    "%s: this file system cannot lock files; two runs here would redo each other's cases", label.parent
                )
                yield True
                return
            if _same_file(lock_path, descriptor):
                try:
                    yield True
                finally:
                    lock_path.unlink(missing_ok=True)  # still holding it: no one can have taken this file meanwhile
                return
        finally:
            os.close(descriptor)
        # the holder before us removed that file as we locked it: the lock is the new file, so try that
    yield False


LOCK_ATTEMPTS = 5
"""Tries to take a case whose lock file is being replaced under us (then another run is at work on it)."""


def _same_file(path: Path, descriptor: int) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
