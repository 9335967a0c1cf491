"""The cases of a `predict` run: which CTs an input names, where each one's outputs go, and reading them ahead."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.names import IMAGE_SUFFIXES, case_id, is_image_path
from efficientscn.imaging.read import is_dicom_folder

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
    if inside or (inputs.is_dir() and single and folder.resolve() in output.resolve().parents):
        raise InputError(f"{output}: the output folder is (inside) the input folder {folder}; choose another one")
    if single:
        return [inputs]
    entries = sorted(p for p in inputs.iterdir() if not p.name.startswith("."))
    sources = [p for p in entries if is_image_path(p)]
    ignored = [p.name for p in entries if p not in sources]
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


def _read(case: Case, max_voxels: int) -> tuple[CanonicalCT, float]:
    start = time.perf_counter()
    return CanonicalCT.read(case.source, max_voxels=max_voxels), time.perf_counter() - start


class ReadAhead:
    """Reads the cases in a background thread, one ahead of the case being segmented (at most two in memory)."""

    def __init__(self, cases: list[Case], executor: ThreadPoolExecutor, max_voxels: int) -> None:
        self._cases = cases
        self._max_voxels = max_voxels
        self._executor = executor
        self._pending: dict[int, Future[tuple[CanonicalCT, float]]] = {}
        self._submit(0)

    def _submit(self, index: int) -> None:
        if index < len(self._cases) and index not in self._pending:
            self._pending[index] = self._executor.submit(_read, self._cases[index], self._max_voxels)

    def take(self, case: Case) -> tuple[CanonicalCT, float]:
        """The CT of `case` on its processing grid and the seconds its reading took (waiting for it if needed),
        after starting to read the one after it."""
        index = self._cases.index(case)
        self._submit(index)
        self._submit(index + 1)
        return self._pending.pop(index).result()
