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
    _refuse_output_among_inputs(inputs, output, dicom_folder=single and inputs.is_dir())
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


def _refuse_output_among_inputs(inputs: Path, output: Path, *, dicom_folder: bool) -> None:
    """InputError where labels would go among CTs, where a later run would take them for CTs: into the input folder
    (a single file's folder), inside a folder of CTs or a DICOM folder, or beside a DICOM folder given alone (among
    its sibling series and files, which a run on their folder reads). A single file's labels may go in a subfolder
    beside it: its folder is not scanned for CTs."""
    folder = inputs.parent if inputs.is_file() else inputs
    target, source = output.resolve(), folder.resolve()
    if target == source:
        what = f"the folder of the input {inputs.name}" if inputs.is_file() else "the input folder"
        raise InputError(f"{output}: the output folder is {what}; labels never go among the CTs, choose another one")
    if inputs.is_dir() and source in target.parents:
        raise InputError(f"{output}: the output folder is inside the input folder {folder}; choose another one")
    if dicom_folder and target == source.parent:
        raise InputError(
            f"{output}: the output folder holds the input DICOM folder {inputs.name}: its label would lie beside it, "
            f"among what a run on {output} reads as CTs; choose another one (say {output / 'labels'})"
        )


def label_owners(cases: list[Case]) -> dict[Path, Path]:
    """The first case of each label name: a later case whose label would overwrite it is refused."""
    owners: dict[Path, Path] = {}
    for case in cases:
        owners.setdefault(case.output, case.source)
    return owners
