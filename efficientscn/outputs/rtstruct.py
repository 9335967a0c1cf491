"""A label map as a DICOM RT Structure Set (RTSTRUCT) over the DICOM series its CT was read from.

Radiotherapy planning systems and viewers show an RT Structure Set as contours over the series it references: one
ROI per organ found, named and coloured as `labels.ORGANS` says, each contour on the instance of its slice.
rt-utils (the library TotalSegmentator writes its RT Structure Sets with; the `rtstruct` extra) traces the
contours, on a finer grid than the CT's so that a reader filling them gets the label map back (`_organ_contours`);
the series, its ordering by position and what an anonymised one lacks are `dicom_source`'s, as for the DICOM-SEG.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from efficientscn.atomic import atomic_output
from efficientscn.errors import InputError
from efficientscn.labels import ORGANS
from efficientscn.outputs.dicom_source import (
    CONTENT_LABEL,
    MANUFACTURER,
    MODEL_NAME,
    SERIES_DESCRIPTION,
    failures_named,
    label_values,
    organs_present,
    read_source_series,
)
from efficientscn.outputs.existing import declares_sop_class, dicom_read_errors, read_dicom_output
from efficientscn.versions import __version__

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
"""The SOP class of an RT Structure Set."""

RTSTRUCT_SERIES_NUMBER = 301
ROI_INTERPRETED_TYPE = "ORGAN"
"""Every ROI's RT ROI Interpreted Type (DICOM defined term)."""

INSTALL_HINT = "RT Structure Sets need the rtstruct extra: pip install 'efficientscn[rtstruct]' (rt-utils)"


def write_rtstruct(series: Path, label: sitk.Image, path: Path, *, overwrite: bool = False) -> Path:
    """Write the RT Structure Set of `label` over the DICOM series in folder `series`, atomically, to `path`.

    series, label: as `dicom_seg.write_dicom_seg` takes them (the label on the exact grid ITK reads the series on).
    path: the file to write (e.g. `<output>/<case>.rtstruct.dcm`).

    One ROI per organ the label holds, numbered 1.. in label order, named by the organ (`labels.ORGANS`), in its
    colour, generated AUTOMATIC, interpreted as ORGAN; its closed planar contours lie on the instances of the
    slices it covers (`_organ_contours`). Raises InputError naming the folder when the label has no organ, is not a
    uint8 0..4 map or does not lie on the series' grid; InputError naming `path` when rt-utils is not installed or
    cannot build the structure set; FileExistsError if `path` exists and `overwrite` is not set (the file is
    untouched). Returns `path`.
    """
    series, path = Path(series), Path(path)
    values = label_values(series, label)
    present = organs_present(values)
    if not present:
        raise InputError(f"{series}: no organ in the label: no RT Structure Set written (it needs at least one ROI)")
    try:
        from rt_utils import ds_helper
        from rt_utils.utils import ROIData
    except ImportError as error:
        raise InputError(f"{path}: not written: {INSTALL_HINT}") from error
    with atomic_output(path, suffix=path.suffix, overwrite=overwrite) as temporary:
        sources = read_source_series(series, label, output_kind="RT Structure Set")
        with failures_named(path, "RT Structure Set", "rt-utils", series), _rt_utils_deprecations_silenced():
            structure = ds_helper.create_rtstruct_dataset(sources)
            frame_of_reference = structure.ReferencedFrameOfReferenceSequence[-1].FrameOfReferenceUID
            for number, value in enumerate(present, start=1):
                organ = ORGANS[value]
                mask, planes = _organ_contours(values == value, sources)
                roi = ROIData(
                    mask,
                    list(organ.colour_rgb),
                    number,
                    organ.name,
                    frame_of_reference,
                    description=f"FLARE label {value}",
                    roi_generation_algorithm="AUTOMATIC",
                )
                structure.ROIContourSequence.append(ds_helper.create_roi_contour(roi, planes))
                structure.StructureSetROISequence.append(ds_helper.create_structure_set_roi(roi))
                structure.RTROIObservationsSequence.append(ds_helper.create_rtroi_observation(roi))
            _complete(structure, sources[0])
            structure.save_as(temporary, enforce_file_format=True)
    return path


class _PydicomDeprecations(logging.Filter):
    """Drops pydicom's log lines about attributes it deprecates (pydicom logs them as warnings besides warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be removed in v4.0" not in record.getMessage()


@contextlib.contextmanager
def _rt_utils_deprecations_silenced() -> Iterator[None]:
    """rt-utils sets the transfer syntax through attributes pydicom 3 deprecates: not the user's concern."""
    pydicom_logger, dropping = logging.getLogger("pydicom"), _PydicomDeprecations()
    pydicom_logger.addFilter(dropping)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        pydicom_logger.removeFilter(dropping)


CONTOUR_UPSAMPLING = 2
"""In-plane factor of the finer grid the contours are traced on (see `_organ_contours`)."""


def _organ_contours(mask_zyx: np.ndarray, sources: list[Dataset]) -> tuple[np.ndarray, list[Dataset]]:
    """An organ's mask as rt-utils traces it (rows, columns, planes) and the planes it lies on, such that its
    contours run a quarter voxel outside the centres of its edge voxels.

    rt-utils traces a contour through the centres of a mask's edge pixels; filled again by a reader that keeps the
    voxels whose centres lie inside (dcmrtstruct2nii, most planning systems), an edge voxel whose centre lies on the
    contour may go either way, and at 3 mm a third of a small organ's voxels are edge voxels. Here the mask is
    traced on a grid twice as fine in-plane, whose pixel centres lie a quarter voxel from the voxels' edges: every
    voxel centre of the organ then lies inside its contours and every other one outside, so a reader gets the
    label back. The grid covers the organ's bounding box only (memory: 4 bytes per voxel of the box), and its
    planes are stand-ins for the source instances carrying their UIDs, orientation and the finer geometry.

    rt-utils scales the in-plane axis along a row by the first PixelSpacing value (the spacing between rows), so the
    stand-ins hold the two spacings in swapped order: rectangular pixels then land where they are.
    """
    z, y, x = (np.flatnonzero(mask_zyx.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    box = mask_zyx[z[0] : z[-1] + 1, y[0] : y[-1] + 1, x[0] : x[-1] + 1]
    fine = box.repeat(CONTOUR_UPSAMPLING, axis=1).repeat(CONTOUR_UPSAMPLING, axis=2)
    first_fine_centre = 0.5 / CONTOUR_UPSAMPLING - 0.5  # in voxels, from the centre of the box's first voxel
    planes = []
    for source in sources[z[0] : z[-1] + 1]:
        row_mm, column_mm = (float(v) for v in source.PixelSpacing)  # between rows, between columns
        along_row, along_column = np.asarray([float(v) for v in source.ImageOrientationPatient]).reshape(2, 3)
        corner = (
            np.asarray([float(v) for v in source.ImagePositionPatient])
            + (x[0] + first_fine_centre) * column_mm * along_row
            + (y[0] + first_fine_centre) * row_mm * along_column
        )
        plane = Dataset()
        plane.SOPClassUID = source.SOPClassUID
        plane.SOPInstanceUID = source.SOPInstanceUID
        plane.ImageOrientationPatient = source.ImageOrientationPatient
        plane.ImagePositionPatient = [float(v) for v in corner]
        plane.PixelSpacing = [column_mm / CONTOUR_UPSAMPLING, row_mm / CONTOUR_UPSAMPLING]  # rt-utils' order
        plane.Rows, plane.Columns = fine.shape[1:]
        planes.append(plane)
    return np.transpose(fine, (1, 2, 0)), planes


def _complete(structure: Dataset, source: Dataset) -> None:
    """What rt-utils leaves out or fills with its own names, as the RT Structure Set IOD wants it: this tool as the
    maker, the General Study and Frame of Reference attributes of the source series, the ROIs interpreted as
    organs."""
    structure.Manufacturer = MANUFACTURER
    structure.ManufacturerModelName = MODEL_NAME
    structure.SoftwareVersions = __version__
    del structure.InstitutionName  # rt-utils' own laboratory: type 3, left out
    structure.SeriesDescription = SERIES_DESCRIPTION
    structure.SeriesNumber = RTSTRUCT_SERIES_NUMBER
    structure.InstanceNumber = 1
    structure.StructureSetLabel = CONTENT_LABEL
    structure.ReferringPhysicianName = source.ReferringPhysicianName
    structure.AccessionNumber = source.AccessionNumber
    structure.OperatorsName = None
    structure.FrameOfReferenceUID = source.FrameOfReferenceUID
    structure.PositionReferenceIndicator = source.get("PositionReferenceIndicator")
    for observation in structure.RTROIObservationsSequence:
        observation.RTROIInterpretedType = ROI_INTERPRETED_TYPE
        del observation.ROIObservationDescription  # rt-utils' display settings for its own viewer


def rtstruct_problem(path: Path) -> str | None:
    """Why the file at `path` cannot count as a finished RT Structure Set of this tool, or None if it can: it must
    read whole as an RT Structure Set whose every ROI has its contours and observation, each contour all its
    points (a file cut short reads as far as it goes)."""
    dataset = read_dicom_output(path, RT_STRUCTURE_SET_STORAGE, "RTSTRUCT", "an RT Structure Set")
    if isinstance(dataset, str):
        return dataset
    try:
        rois = dataset.get("StructureSetROISequence") or []
        contours = dataset.get("ROIContourSequence") or []
        observations = dataset.get("RTROIObservationsSequence") or []
        if not rois or not len(rois) == len(contours) == len(observations):
            return f"incomplete: {len(rois)} ROIs, {len(contours)} with contours, {len(observations)} observations"
        for roi in contours:
            if not roi.get("ContourSequence"):
                return f"incomplete: ROI {roi.get('ReferencedROINumber')} has no contour"
            for contour in roi.ContourSequence:
                if len(contour.ContourData) != 3 * int(contour.NumberOfContourPoints):
                    return f"incomplete: a contour of ROI {roi.ReferencedROINumber} lacks points"
    except dicom_read_errors() as error:
        return f"not readable as an RT Structure Set ({type(error).__name__}: {error})"
    return None


def is_rtstruct_file(path: Path) -> bool:
    """Whether the file at `path` declares itself an RT Structure Set: one this tool may replace."""
    return declares_sop_class(path, RT_STRUCTURE_SET_STORAGE)
