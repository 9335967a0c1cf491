"""The cases of a `predict` run: which CTs an input names, and where each one's label goes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from efficientscn.errors import InputError
from efficientscn.imaging.names import IMAGE_SUFFIXES, case_id, is_image_path
from efficientscn.imaging.read import is_dicom_file, is_dicom_folder

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
