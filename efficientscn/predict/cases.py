"""The cases of a `predict` run: which CTs an input names, and where each one's label goes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.names import IMAGE_SUFFIXES, case_id, is_image_path
from efficientscn.imaging.read import is_dicom_file, is_dicom_folder, read_header

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


def is_done(label: Path) -> bool:
    """Whether a case's label is there; False for a name no file system takes (its case failed for it)."""
    try:
        return label.exists()
    except OSError:
        return False


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


def case_owners(cases: list[Case]) -> dict[str, Path]:
    """The first CT of each case ID: a later one with the same ID (`x.mha` beside `x.nii.gz`, `x.nii` beside
    `x_0000.nii.gz`) would share its label and every other output, and is refused. Every such clash is named in one
    warning up front."""
    owners: dict[str, Path] = {}
    clashes: dict[str, list[str]] = {}
    for case in cases:
        owner = owners.setdefault(case.id, case.source)
        if owner != case.source:
            clashes.setdefault(case.id, [owner.name]).append(case.source.name)
    if clashes:
        named = "; ".join(f"{case_id}: {', '.join(names)}" for case_id, names in clashes.items())
        logger.warning(
            "%d case ID(s) given by more than one input, whose outputs would share names: %s; the first of each is "
            "segmented, the others fail: rename them",
            len(clashes),
            named,
        )
    return owners


def label_maps_among(sources: list[Path]) -> list[Path]:
    """The image files among `sources` that are label maps by their header (8-bit unsigned: no CT in Hounsfield
    units is stored so), as a dataset ships them beside its CTs. A label map stored otherwise is found when read."""
    found = []
    for source in sources:
        if source.is_dir():
            continue
        try:
            if read_header(source).pixel_id == sitk.sitkUInt8:
                found.append(source)
        except (InputError, OSError):  # unreadable: its turn says why
            continue
    return found


def without_label_maps(sources: list[Path], inputs: Path) -> list[Path]:
    """The CTs among `sources`: label maps beside them (as datasets ship them) are named in one warning and left
    out; nothing but label maps stops the batch (swapped input and output folders?)."""
    label_maps = label_maps_among(sources)
    if not label_maps:
        return sources
    if len(label_maps) == len(sources):
        raise InputError(f"{inputs}: label maps only, no CT (8-bit labels): are the input and output folders swapped?")
    names = [path.name for path in label_maps]
    shown = ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
    logger.warning("%s: %d file(s) are label maps, not CTs, and are skipped: %s", inputs, len(names), shown)
    return [source for source in sources if source not in label_maps]


LISTED = 20
"""Names a warning lists at most."""
