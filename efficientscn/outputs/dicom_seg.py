"""A label map as a DICOM Segmentation object (DICOM-SEG) of the DICOM series its CT was read from.

A PACS or viewer (3D Slicer, OHIF) shows a SEG over the series it references, one coded segment per organ. The SEG
references exactly the instances `read_image` read (the largest series of the folder), and each of its frames
names the source instance whose plane it covers, found by position (never by file order).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from efficientscn.atomic import atomic_output
from efficientscn.errors import InputError
from efficientscn.imaging.geometry import DIRECTION_TOLERANCE, grid_of
from efficientscn.imaging.itk_path import itk_path
from efficientscn.imaging.read import dicom_series_files
from efficientscn.labels import NUM_LABELS, ORGAN_CATEGORY, ORGAN_NAMES, ORGANS
from efficientscn.versions import __version__

logger = logging.getLogger(__name__)

ANATOMICAL_STRUCTURE = Code(ORGAN_CATEGORY[0], "SCT", ORGAN_CATEGORY[1])
"""The property category of every segment: SCT 91723000 "Anatomical Structure" (DICOM CID 7150)."""

ARTIFICIAL_INTELLIGENCE: Code = codes.cid7162.ArtificialIntelligence
"""The algorithm family: DCM 123110 "Artificial Intelligence" (DICOM CID 7162)."""

SEG_SERIES_NUMBER = 300
SEG_SERIES_DESCRIPTION = "EfficientSCN organs"
SEG_MANUFACTURER = "efficientscn"
SEG_MODEL_NAME = "EfficientSCN"
SEG_DEVICE_SERIAL_NUMBER = "none"
SEG_CONTENT_LABEL = "ORGANS"

POSITION_TOLERANCE_VOXELS = 0.1
"""How far (in voxels) an instance's ImagePositionPatient may lie from a voxel of the label grid and still be taken
as that slice: DICOM stores positions as decimal strings, the grid comes from ITK's reading of the same values."""

SERIES_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
"""Type 1 UIDs that all instances of a series share; generated once per series where every instance lacks one."""

TYPE2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
"""Type 2 attributes the SEG needs from its source: the standard allows them empty, so a missing one is added empty."""


def write_dicom_seg(series: Path, label: sitk.Image, path: Path, *, overwrite: bool = False) -> Path:
    """Write the DICOM-SEG of `label` over the DICOM series in folder `series`, atomically, to `path`.

    series: the DICOM folder the CT was read from with `read_image` (its largest series is the one referenced).
    label: uint8 label map, values 0..4 (0 background, 1 liver, 2 kidney, 3 spleen, 4 pancreas), on the exact
    grid ITK reads that series on (size, spacing, origin, direction, xyz).
    path: the SEG file to write (e.g. `<output>/<case>.seg.dcm`).

    The SEG is BINARY (bit-packed, explicit VR little endian) with one segment per organ present, numbered 1.. in
    label order; its segment label is the organ name (`ORGAN_NAMES`), its property type the organ's SNOMED CT code.
    Empty frames are left out. Attributes an anonymised series lacks are filled in memory only (type 2 empty,
    UIDs generated once for the series, a missing SliceThickness set to the slice spacing), with one info log
    line naming them; the source files are never modified.

    Raises InputError naming the folder when the label has no organ (a SEG needs at least one segment), is not a
    uint8 0..4 map, or does not lie on the grid of the series' instances (count, rows/columns, spacing,
    orientation, positions); FileExistsError if `path` exists and `overwrite` is not set (the file is untouched).
    Returns `path`.
    """
    series, path = Path(series), Path(path)
    if not series.is_dir():
        raise InputError(f"{series}: not a folder; expected the DICOM series folder the CT was read from")
    values = _label_values(series, label)
    present = [value for value in ORGAN_NAMES if (values == value).any()]  # bool comparisons, no float copies
    if not present:
        raise InputError(f"{series}: no organ in the label: no DICOM-SEG written (a SEG needs at least one segment)")
    with atomic_output(path, suffix=path.suffix, overwrite=overwrite) as temporary:
        with itk_path(series) as readable:
            datasets = _read_headers(series, dicom_series_files(series, readable))
        _fill_missing_attributes(series, datasets, slice_spacing_mm=label.GetSpacing()[2])
        slices = _slice_of_each_instance(series, datasets, label)
        order = np.argsort(slices)
        if present == list(range(1, len(present) + 1)):
            segments = values  # label values are the segment numbers already: no copy
        else:
            segment_of_label = np.zeros(256, np.uint8)  # label value -> segment number (0: background)
            segment_of_label[present] = np.arange(1, len(present) + 1)
            segments = segment_of_label[values]
        try:
            with warnings.catch_warnings():
                # the patient's name is the source's, copied as it is: its form is not ours to warn about
                warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
                seg = highdicom.seg.Segmentation(
                    source_images=[datasets[i] for i in order],
                    pixel_array=segments,  # frames in slice order, as the sorted source images
                    segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
                    segment_descriptions=[_segment_description(n, v) for n, v in enumerate(present, start=1)],
                    series_instance_uid=highdicom.UID(),
                    series_number=SEG_SERIES_NUMBER,
                    sop_instance_uid=highdicom.UID(),
                    instance_number=1,
                    manufacturer=SEG_MANUFACTURER,
                    manufacturer_model_name=SEG_MODEL_NAME,
                    software_versions=__version__,
                    device_serial_number=SEG_DEVICE_SERIAL_NUMBER,
                    content_label=SEG_CONTENT_LABEL,
                    content_description=f"EfficientSCN: {', '.join(ORGAN_NAMES[v] for v in present)}",
                    series_description=SEG_SERIES_DESCRIPTION,
                    omit_empty_frames=True,
                )
        except (ValueError, AttributeError) as error:  # highdicom finds the source headers unfit (or lacking)
            raise InputError(f"{series}: cannot build a DICOM-SEG of this series: {error}") from error
        seg.save_as(temporary, enforce_file_format=True)
    return path


def _label_values(series: Path, label: sitk.Image) -> np.ndarray:
    """The label's voxels (z, y, x) as a view, after checking it is a 3-D uint8 map with values 0..4."""
    if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{series}: the label is not a 3-D single-component image; expected a uint8 label map")
    if label.GetPixelID() != sitk.sitkUInt8:
        raise InputError(f"{series}: the label is {label.GetPixelIDTypeAsString()}; expected a uint8 label map")
    values = sitk.GetArrayViewFromImage(label)
    if values.size and values.max() >= NUM_LABELS:
        raise InputError(f"{series}: label value {int(values.max())} outside 0..{NUM_LABELS - 1}")
    return values


def _read_headers(series: Path, files: Sequence[str]) -> list[Dataset]:
    """The headers (no pixel data) of the series' files, in the order given."""
    datasets = []
    for file in files:
        try:
            datasets.append(pydicom.dcmread(file, stop_before_pixels=True, force=True))
        except (InvalidDicomError, OSError, ValueError) as error:
            raise InputError(f"{series}: {Path(file).name}: DICOM header cannot be read: {error}") from error
    return datasets


def _missing(dataset: Dataset, keyword: str) -> bool:
    return keyword not in dataset or dataset[keyword].value in (None, "")


def _fill_missing_attributes(series: Path, datasets: list[Dataset], slice_spacing_mm: float) -> None:
    """Add, in memory, what an anonymised series lacks and the SEG needs; one info log line names what was added.

    Series-level UIDs missing from every instance are generated once for the series (or taken from the instances
    that carry the single value); a missing SOPInstanceUID or SOPClassUID is taken from the file meta information,
    else the SOPInstanceUID is generated; missing type 2 attributes are added empty, as the standard allows. A
    missing or empty SliceThickness becomes the slice spacing: the SEG's pixel measures need one (readers,
    highdicom's among them, refuse a SEG without it), and the spacing is the thickness of the label's voxels.
    """
    filled: list[str] = []
    for keyword in SERIES_UIDS:
        lacking = [ds for ds in datasets if _missing(ds, keyword)]
        if not lacking:
            continue
        known = {str(ds[keyword].value) for ds in datasets if not _missing(ds, keyword)}
        if len(known) > 1:
            continue  # instances disagree: nothing consistent to fill (highdicom refuses such a series)
        uid = next(iter(known)) if known else highdicom.UID()
        for ds in lacking:
            setattr(ds, keyword, uid)
        filled.append(f"{keyword} ({'from the other instances' if known else 'generated'})")
    for keyword, meta_keyword in (
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ("SOPClassUID", "MediaStorageSOPClassUID"),
    ):
        lacking = [ds for ds in datasets if _missing(ds, keyword)]
        sources = set()
        for ds in lacking:
            meta = getattr(ds, "file_meta", None)
            if meta is not None and not _missing(meta, meta_keyword):
                setattr(ds, keyword, meta[meta_keyword].value)
                sources.add("file meta")
            elif keyword == "SOPInstanceUID":
                ds.SOPInstanceUID = highdicom.UID()
                sources.add("generated")
            else:
                raise InputError(f"{series}: an instance has no SOPClassUID (nor MediaStorageSOPClassUID)")
        if lacking:
            filled.append(f"{keyword} ({', '.join(sorted(sources))})")
    for keyword in TYPE2_ATTRIBUTES:
        lacking = [ds for ds in datasets if keyword not in ds]
        for ds in lacking:
            setattr(ds, keyword, None)
        if lacking:
            filled.append(f"{keyword} (empty)")
    thin = [ds for ds in datasets if _missing(ds, "SliceThickness")]
    for ds in thin:
        ds.SliceThickness = pydicom.valuerep.format_number_as_ds(float(slice_spacing_mm))
    if thin:
        filled.append(f"SliceThickness (the slice spacing, {slice_spacing_mm:.6g} mm)")
    emptied = [ds for ds in datasets if "SpecificCharacterSet" in ds and _missing(ds, "SpecificCharacterSet")]
    for ds in emptied:  # type 1C: present only for a repertoire other than the default, which an empty one means
        del ds.SpecificCharacterSet
    if emptied:
        filled.append("SpecificCharacterSet (empty: dropped, the default repertoire)")
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    if len(set(uids)) != len(uids):
        raise InputError(f"{series}: several instances share a SOPInstanceUID: cannot reference them apart")
    if filled:
        logger.info("%s: filled for the DICOM-SEG, in memory only: %s", series, "; ".join(filled))


def _slice_of_each_instance(series: Path, datasets: Sequence[Dataset], label: sitk.Image) -> np.ndarray:
    """The label z index of each instance's plane, from its ImagePositionPatient; InputError naming the folder
    unless the instances cover the label grid one for one (count, rows/columns, pixel spacing, orientation)."""
    grid = grid_of(label)
    columns, rows, slices = grid.size
    where = f"{series}: the label is not on the grid of this DICOM series"
    if len(datasets) != slices:
        raise InputError(f"{where}: {len(datasets)} instances, {slices} label slices")
    for ds in datasets:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if _missing(ds, keyword):
                raise InputError(f"{series}: instance {ds.SOPInstanceUID} has no {keyword}: its plane cannot be placed")
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise InputError(f"{where}: {ds.Rows} rows x {ds.Columns} columns per instance, label {rows} x {columns}")
        spacing_xy = (float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]))
        if not np.allclose(spacing_xy, grid.spacing[:2], rtol=1e-4, atol=0):
            raise InputError(f"{where}: pixel spacing {spacing_xy} mm (x, y), label {grid.spacing[:2]}")
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient]).reshape(2, 3)
        if not np.allclose(orientation, grid.direction_matrix[:, :2].T, rtol=0, atol=DIRECTION_TOLERANCE):
            raise InputError(
                f"{where}: image orientation {orientation.ravel().round(4).tolist()}, label row/column directions "
                f"{grid.direction_matrix[:, :2].T.ravel().round(4).tolist()}"
            )
    positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    index = grid.physical_to_index(positions)
    nearest = np.rint(index[:, 2]).astype(int)
    off = np.abs(index - np.column_stack([np.zeros((len(datasets), 2)), nearest])).max(axis=1)
    outside = (off > POSITION_TOLERANCE_VOXELS) | (nearest < 0) | (nearest >= slices)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"{where}: instance {datasets[first].SOPInstanceUID} at {positions[first].round(3).tolist()} mm lies at "
            f"label index {index[first].round(3).tolist()} (x, y, z), not at the start of a label slice"
        )
    if len(set(nearest.tolist())) != slices:
        raise InputError(f"{where}: several instances lie on the same label slice")
    return nearest


def _segment_description(number: int, value: int) -> highdicom.seg.SegmentDescription:
    """Segment `number` of organ label `value`: its name, SNOMED CT code, colour and the algorithm that made it."""
    description = highdicom.seg.SegmentDescription(
        segment_number=number,
        segment_label=ORGAN_NAMES[value],
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=Code(ORGANS[value].snomed_code, "SCT", ORGANS[value].snomed_meaning),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name=SEG_MODEL_NAME, family=ARTIFICIAL_INTELLIGENCE, version=__version__
        ),
        display_color=highdicom.color.CIELabColor.from_rgb(*ORGANS[value].colour_rgb),
    )
    description.SegmentDescription = f"FLARE label {value}"
    return description


SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
"""The SOP class of a DICOM Segmentation object."""


def dicom_seg_problem(path: Path) -> str | None:
    """Why the file at `path` cannot count as a finished DICOM-SEG of this tool, or None if it can: it must read
    whole (its frames included) as a Segmentation object with at least one segment."""
    try:
        dataset = pydicom.dcmread(path)
        if dataset.get("SOPClassUID") != SEGMENTATION_STORAGE or dataset.get("Modality") != "SEG":
            return "not a DICOM Segmentation object"
        if not dataset.get("SegmentSequence"):
            return "a DICOM-SEG without segments"
        frames = int(dataset.NumberOfFrames) * int(dataset.Rows) * int(dataset.Columns)
        if len(dataset.PixelData) < (frames + 7) // 8:  # BINARY: one bit per pixel
            return f"truncated: {len(dataset.PixelData)} bytes of pixel data for {frames} pixels"
    except (InvalidDicomError, OSError, AttributeError, KeyError, TypeError, ValueError) as error:
        return f"not a readable DICOM-SEG ({type(error).__name__}: {error})"
    return None


def is_dicom_seg_file(path: Path) -> bool:
    """Whether the file at `path` declares itself a DICOM Segmentation object (its header, pixels not read): one
    this tool may replace, whole or damaged."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True).get("SOPClassUID") == SEGMENTATION_STORAGE
    except (InvalidDicomError, OSError, AttributeError, KeyError, TypeError, ValueError):
        return False
