"""The cases of a `predict` run: which CTs an input names, where each one's outputs go, and reading them ahead."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from efficientscn.atomic import NAME_MAX
from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.geometry import SpacingFallback
from efficientscn.imaging.names import IMAGE_SUFFIXES, case_id, image_suffix, is_image_path
from efficientscn.imaging.nifti_check import check_nifti_complete
from efficientscn.imaging.read import header_size, is_dicom_file, is_dicom_folder, read_header, read_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One CT to segment and where its label goes."""

    source: Path
    output: Path
    """The label file: its presence marks the case as done."""

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def id(self) -> str:
        """The case ID outputs are named by: `x_0000.nii.gz` -> `x`, a DICOM folder -> its name."""
        return case_id(self.source)


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


def existing_label_problem(label: Path, ct: Path) -> str | None:
    """Why the label file already at `label` cannot count as `ct`'s finished label, or None if it can: it must read
    whole, be uint8, and lie on the CT's grid (for a DICOM folder: have its size)."""
    try:
        if image_suffix(label) in (".nii", ".nii.gz"):
            check_nifti_complete(label)
        else:
            read_image(label)  # a label is small: reading it whole is the check that it is whole
        header = read_header(label)
        if header.pixel_id != sitk.sitkUInt8:
            return f"{header.pixel_type}, where labels are uint8"
    except (InputError, OSError) as error:
        return str(error).removeprefix(f"{label}: ")
    return label_grid_problem(label, ct)


def label_grid_problem(label: Path, ct: Path) -> str | None:
    """Why the label file at `label` does not lie on `ct`'s grid by their headers (for a DICOM folder: its size),
    or None if it does; the part of `existing_label_problem` that reads headers only."""
    try:
        header = read_header(label)
        if ct.is_dir():
            size = header_size(ct)
            return None if tuple(header.grid.size) == size else f"size {header.grid.size}, the CT's is {size}"
        differences = header.grid.differences(read_header(ct).grid)
    except (InputError, OSError) as error:
        return str(error).removeprefix(f"{label}: ")
    return f"not on the CT's grid: {'; '.join(differences)}" if differences else None


def refuse_replacing_foreign_file(path: Path) -> None:
    """InputError unless the file at `path` (if any) may be replaced by a label: empty, or uint8 by its header, as
    the labels this tool writes. A CT is never replaced, also with --overwrite (swapped input and output)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        header = read_header(path)
    except InputError as error:
        raise InputError(f"{path}: exists and cannot be told to be a label of this tool; not replaced") from error
    if header.pixel_id != sitk.sitkUInt8:
        raise InputError(
            f"{path}: exists and holds {header.pixel_type} voxels, not a label of this tool (uint8); not replaced: "
            "move it away, or check that the input and output folders are not swapped"
        )


def find_sources(inputs: Path, output: Path) -> list[Path]:
    """The CTs of `inputs`: an image file, a DICOM folder, or a folder of image files and DICOM folders.

    Raises InputError when nothing is found or when the output folder is the input folder (or inside a folder of
    CTs): labels never go among the CTs, where a later run would take them for CTs.
    """
    if not inputs.exists():
        raise InputError(f"{inputs}: no such file or folder")
    single = inputs.is_file() or is_dicom_folder(inputs)
    folder = inputs.parent if inputs.is_file() else inputs
    # a folder of CTs would take labels written inside it for CTs on the next run; a single CT's folder is its own
    inside = output.resolve() == folder.resolve() or (not single and folder.resolve() in output.resolve().parents)
    beside = single and output.resolve() == inputs.parent.resolve()  # a DICOM folder's label among its siblings
    if inside or beside or (inputs.is_dir() and single and folder.resolve() in output.resolve().parents):
        raise InputError(f"{output}: the output folder is (inside) the input folder {folder}; choose another one")
    if single:
        return [inputs]
    entries = sorted(p for p in inputs.iterdir() if not p.name.startswith("."))
    sources = [p for p in entries if is_image_path(p)]
    loose_dicom = [p.name for p in entries if p not in sources and p.is_file() and is_dicom_file(p)]
    ignored = [p.name for p in entries if p not in sources and p.name not in loose_dicom]
    if loose_dicom:
        logger.warning(
            "%s: %d loose DICOM file(s) beside the CTs not read (a DICOM series is read from a folder of its own): %s",
            inputs,
            len(loose_dicom),
            loose_dicom[:5],
        )
    if ignored:
        logger.warning("%s: ignoring %d file(s) without an image ending: %s", inputs, len(ignored), ignored[:5])
    if not sources:
        raise InputError(f"{inputs}: no CT found (image files {', '.join(IMAGE_SUFFIXES)} or DICOM folders)")
    return sources


def label_owners(cases: list[Case]) -> dict[Path, Path]:
    """The first case of each label name: a later case whose label would overwrite it is refused."""
    owners: dict[Path, Path] = {}
    for case in cases:
        owners.setdefault(case.output, case.source)
    return owners


READ_AHEAD_MAX_VOXELS = 64 * 1024 * 1024
"""A next CT larger than this (128 MB in int16, a 512 x 512 x 256 scan) is read when its turn comes, not while the
current one is segmented, so that a batch needs little more memory than its largest case."""


def _read(
    case: Case, max_voxels: int, spacing_fallback: SpacingFallback, keep_as_read: bool
) -> tuple[CanonicalCT, float]:
    start = time.perf_counter()
    ct = CanonicalCT.read(
        case.source, max_voxels=max_voxels, spacing_fallback=spacing_fallback, keep_as_read=keep_as_read
    )
    return ct, time.perf_counter() - start


def _small_enough_to_read_ahead(case: Case) -> bool:
    """Whether the header of `case` gives at most `READ_AHEAD_MAX_VOXELS` (unreadable: no; its turn says why)."""
    try:
        return math.prod(header_size(case.source)) <= READ_AHEAD_MAX_VOXELS
    except (InputError, OSError):
        return False


class ReadAhead:
    """Reads the cases in a background thread: the first at once, each next one while the case before it is
    segmented if it is small enough (`READ_AHEAD_MAX_VOXELS`), else when its turn comes."""

    def __init__(
        self,
        cases: list[Case],
        executor: ThreadPoolExecutor,
        max_voxels: int,
        spacing_fallback: SpacingFallback = "missing",
        *,
        keep_as_read: bool = False,
    ) -> None:
        """`keep_as_read`: keep an oblique CT as read too (see `CanonicalCT.from_image`)."""
        self._cases = cases
        self._max_voxels = max_voxels
        self._spacing_fallback = spacing_fallback
        self._keep_as_read = keep_as_read
        self._executor = executor
        self._pending: dict[int, Future[tuple[CanonicalCT, float] | None]] = {}
        self._submit(0, ahead=False)

    def _read_now(self, case: Case) -> tuple[CanonicalCT, float]:
        return _read(case, self._max_voxels, self._spacing_fallback, self._keep_as_read)

    def _read_if_small(self, case: Case) -> tuple[CanonicalCT, float] | None:
        """The CT of `case`, or None if it is too large to be read ahead."""
        return self._read_now(case) if _small_enough_to_read_ahead(case) else None

    def _submit(self, index: int, *, ahead: bool) -> None:
        if index < len(self._cases) and index not in self._pending:
            read = self._read_if_small if ahead else self._read_now
            self._pending[index] = self._executor.submit(read, self._cases[index])

    def take(self, case: Case) -> tuple[CanonicalCT, float]:
        """The CT of `case` on its processing grid and the seconds its reading took (waiting for it if needed),
        after starting to read the one after it."""
        index = self._cases.index(case)
        self._submit(index, ahead=False)
        try:
            read = self._pending.pop(index).result()
        finally:  # also after a failed read: the batch goes on
            self._submit(index + 1, ahead=True)
        return read if read is not None else self._read_now(case)

    def drop(self, case: Case) -> None:
        """Give up `case` (another run does it): its CT is not kept, and the one after it is read next."""
        index = self._cases.index(case)
        self._submit(index + 1, ahead=False)
        pending = self._pending.pop(index, None)
        if pending is not None:
            pending.cancel()
