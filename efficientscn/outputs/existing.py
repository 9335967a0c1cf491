"""Whether a file already where a case's output goes counts as that output, and whether it may be replaced.

A later run keeps a case whose label is there and sound (resume), redoes one whose label is not, and never
replaces a file this tool did not write (a CT, when the input and output folders are swapped).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.names import image_suffix
from efficientscn.imaging.nifti_check import check_nifti_complete
from efficientscn.imaging.read import header_size, read_header, read_image

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


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


def dicom_read_errors() -> tuple[type[Exception], ...]:
    """What pydicom raises for a file that is not DICOM, is cut short or holds values it cannot take."""
    from pydicom.errors import InvalidDicomError  # pydicom only where DICOM outputs are asked for

    return (InvalidDicomError, OSError, AttributeError, KeyError, TypeError, ValueError)


def read_dicom_output(path: Path, sop_class: str, modality: str, what: str) -> Dataset | str:
    """The DICOM object at `path` read whole, or why it cannot count as `what` ("a DICOM Segmentation object") of
    this tool, a string: not readable, or not of `sop_class` and `modality`. The DICOM outputs' `existing_problem`
    starts here."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except dicom_read_errors() as error:
        return f"not readable as {what} ({type(error).__name__}: {error})"
    if dataset.get("SOPClassUID") != sop_class or dataset.get("Modality") != modality:
        return f"not {what}"
    return dataset


def declares_sop_class(path: Path, sop_class: str) -> bool:
    """Whether the file at `path` declares itself of `sop_class` (its header; pixels not read): a DICOM output this
    tool may replace, whole or damaged."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True).get("SOPClassUID") == sop_class
    except dicom_read_errors():
        return False
