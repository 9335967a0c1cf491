"""The DICOM series a CT was read from, as the DICOM outputs (DICOM-SEG, RT Structure Set) reference it.

Both outputs reference exactly the instances `read_image` read (the largest series of the folder), each by the
label slice its plane lies on, found by position (never by file order). What an anonymised series lacks is filled
in memory only, never in the source files: UIDs are derived from the series' own content, so that every run over
the same series references it alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from efficientscn.errors import InputError
from efficientscn.imaging.geometry import DIRECTION_TOLERANCE, grid_of
from efficientscn.imaging.itk_path import itk_path
from efficientscn.imaging.read import dicom_series_files
from efficientscn.labels import NUM_LABELS, ORGAN_NAMES

logger = logging.getLogger(__name__)

POSITION_TOLERANCE_VOXELS = 0.1
"""How far (in voxels) an instance's ImagePositionPatient may lie from a voxel of the label grid and still be taken
as that slice: DICOM stores positions as decimal strings, the grid comes from ITK's reading of the same values."""

SERIES_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
"""Type 1 UIDs that all instances of a series share; derived once per series where every instance lacks one."""

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
"""Type 2 attributes the outputs need from their source: the standard allows them empty, so a missing one is added
empty."""

MANUFACTURER = "efficientscn"
MODEL_NAME = "EfficientSCN"
SERIES_DESCRIPTION = "EfficientSCN organs"
CONTENT_LABEL = "ORGANS"
"""What the DICOM outputs say of their maker and content (the SEG's content label, the structure set's label)."""

BUILD_ERRORS = (ValueError, AttributeError, KeyError, TypeError, IndexError, NotImplementedError)
"""What highdicom, rt-utils and pydicom raise for source headers they cannot take (a SOP class they do not know, a
value that does not fit its VR, an attribute missing): the input's fault, said in one line, not a traceback."""

UID_SALT = "efficientscn source series"
"""Mixed into every derived UID, so that it cannot equal a UID another tool derives from the same values."""


def label_values(series: Path, label: sitk.Image) -> np.ndarray:
    """The label's voxels (z, y, x) as a view, after checking it is a 3-D uint8 map with values 0..4."""
    if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{series}: the label is not a 3-D single-component image; expected a uint8 label map")
    if label.GetPixelID() != sitk.sitkUInt8:
        raise InputError(f"{series}: the label is {label.GetPixelIDTypeAsString()}; expected a uint8 label map")
    values = sitk.GetArrayViewFromImage(label)
    if values.size and values.max() >= NUM_LABELS:
        raise InputError(f"{series}: label value {int(values.max())} outside 0..{NUM_LABELS - 1}")
    return values


def organs_present(values: np.ndarray) -> list[int]:
    """The organ label values that have a voxel in `values`, in label order (bool comparisons, no float copies)."""
    return [value for value in ORGAN_NAMES if (values == value).any()]


def read_source_series(series: Path, label: sitk.Image, *, output_kind: str) -> list[Dataset]:
    """The headers (no pixel data) of the instances `read_image` reads from the DICOM folder `series`, completed as
    the DICOM outputs need (`_fill_missing_attributes`) and ordered by the label slice each lies on: the i-th
    covers slice z = i of `label` (which must lie on the series' grid, see `_slice_of_each_instance`).

    `output_kind` names the output in the warning about UIDs the series lacks. InputError naming the folder when a
    header cannot be read or the instances do not cover the label grid one for one.
    """
    if not series.is_dir():
        raise InputError(f"{series}: not a folder; expected the DICOM series folder the CT was read from")
    with itk_path(series) as readable:
        files = dicom_series_files(series, readable)
        datasets = _read_headers(series, files)
        _fill_missing_attributes(series, datasets, files, label.GetSpacing()[2], output_kind)
    slices = _slice_of_each_instance(series, datasets, label)
    return [datasets[i] for i in np.argsort(slices)]


@contextlib.contextmanager
def failures_named(path: Path, kind: str, builder: str, series: Path) -> Iterator[None]:
    """Building and saving the DICOM output `kind` at `path` from `series` with `builder` (a library): what fails
    names `path` and says what happened, in one line (InputError for the headers, OSError for the disk)."""
    try:
        yield
    except BUILD_ERRORS as error:
        raise InputError(
            f"{path}: {kind} not written: {builder} cannot build one over {series}: {type(error).__name__}: {error}"
        ) from error
    except OSError as error:  # named by the file asked for, not by its temporary
        raise OSError(f"{path}: {kind} not written: {error.strerror or error}") from error


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


def content_uid(*sources: str) -> str:
    """A valid UID derived from `sources` alone: the same sources give the same UID on every run and machine."""
    return str(pydicom.uid.generate_uid(entropy_srcs=[UID_SALT, *sources]))


def _pixel_digest(series: Path, file: str, dataset: Dataset) -> str:
    """The SHA-256 of an instance's pixel data as stored, with its position: what identifies a slice whose file
    carries no SOPInstanceUID."""
    try:
        pixels = pydicom.dcmread(file, force=True).get("PixelData", b"")
    except (InvalidDicomError, OSError, ValueError) as error:
        raise InputError(f"{series}: {Path(file).name}: DICOM file cannot be read: {error}") from error
    position = "\\".join(str(v) for v in dataset.get("ImagePositionPatient") or ())
    return hashlib.sha256(bytes(pixels) + position.encode()).hexdigest()


def _fill_missing_attributes(
    series: Path, datasets: list[Dataset], files: Sequence[str], slice_spacing_mm: float, output_kind: str
) -> None:
    """Add, in memory, what an anonymised series lacks and the DICOM outputs need; a warning names the UIDs that had
    to be derived, an info log line the rest.

    A missing SOPInstanceUID or SOPClassUID is taken from the file meta information, else the SOPInstanceUID is
    derived from the instance's pixel data and position. Series-level UIDs missing from every instance are derived
    once for the series from its SOPInstanceUIDs (so from pixel data where those had to be), or taken from the
    instances that carry the single value. Either way two runs over the same series give the same references; but
    a viewer or PACS that holds the series as stored, without these UIDs, cannot attach the output to it by UID,
    which the warning says. Missing type 2 attributes are added empty, as the standard allows. A missing or empty
    SliceThickness becomes the slice spacing: the outputs' pixel measures need one (readers, highdicom's among them,
    refuse a SEG without it), and the spacing is the thickness of the label's voxels.
    """
    filled: list[str] = []
    derived: list[str] = []
    for keyword, meta_keyword in (
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ("SOPClassUID", "MediaStorageSOPClassUID"),
    ):
        lacking = [(ds, file) for ds, file in zip(datasets, files, strict=True) if _missing(ds, keyword)]
        for ds, file in lacking:
            meta = getattr(ds, "file_meta", None)
            if meta is not None and not _missing(meta, meta_keyword):
                setattr(ds, keyword, meta[meta_keyword].value)
            elif keyword == "SOPInstanceUID":
                ds.SOPInstanceUID = content_uid(keyword, _pixel_digest(series, file, ds))
                derived.append(f"{keyword} of {Path(file).name}")
            else:
                raise InputError(f"{series}: {Path(file).name} has no SOPClassUID (nor MediaStorageSOPClassUID)")
        if lacking:
            filled.append(f"{keyword} (from the file meta information where it holds one)")
    instance_uids = sorted(str(ds.SOPInstanceUID) for ds in datasets)
    if len(set(instance_uids)) != len(instance_uids):
        raise InputError(f"{series}: several instances share a SOPInstanceUID: cannot reference them apart")
    for keyword in SERIES_UIDS:
        lacking_datasets = [ds for ds in datasets if _missing(ds, keyword)]
        if not lacking_datasets:
            continue
        known = {str(ds[keyword].value) for ds in datasets if not _missing(ds, keyword)}
        if len(known) > 1:
            continue  # instances disagree: nothing consistent to fill (the outputs' builders refuse such a series)
        uid = next(iter(known)) if known else content_uid(keyword, *instance_uids)
        for ds in lacking_datasets:
            setattr(ds, keyword, uid)
        if known:
            filled.append(f"{keyword} (from the other instances)")
        else:
            derived.append(keyword)
    for keyword in TYPE2_ATTRIBUTES:
        lacking_datasets = [ds for ds in datasets if keyword not in ds]
        for ds in lacking_datasets:
            setattr(ds, keyword, None)
        if lacking_datasets:
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
    if derived:
        shown = derived if len(derived) <= 6 else [*derived[:5], f"and {len(derived) - 5} more"]
        logger.warning(
            "%s: the series has no %s: the %s references it by UIDs derived from its content (the same on every "
            "run), which a viewer or PACS holding the series as it is cannot match: it cannot attach the %s to "
            "that series by UID (load both together by hand)",
            series,
            ", ".join(shown),
            output_kind,
            output_kind,
        )
    if filled:
        logger.info("%s: filled for the %s, in memory only: %s", series, output_kind, "; ".join(filled))


PLANE_ATTRIBUTES = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2, "Rows": 1, "Columns": 1}
"""What places an instance's plane on the label grid, and how many values each holds."""


def _slice_of_each_instance(series: Path, datasets: Sequence[Dataset], label: sitk.Image) -> np.ndarray:
    """The label z index of each instance's plane, from its ImagePositionPatient; InputError naming the folder
    unless the instances cover the label grid one for one (count, rows/columns, pixel spacing, orientation)."""
    grid = grid_of(label)
    columns, rows, slices = grid.size
    where = f"{series}: the label is not on the grid of this DICOM series"
    if len(datasets) != slices:
        raise InputError(f"{where}: {len(datasets)} instances, {slices} label slices")
    for ds in datasets:
        for keyword, count in PLANE_ATTRIBUTES.items():
            if _missing(ds, keyword):
                raise InputError(f"{series}: instance {ds.SOPInstanceUID} has no {keyword}: its plane cannot be placed")
            if len(ds[keyword].value if ds[keyword].VM > 1 else [ds[keyword].value]) != count:
                raise InputError(
                    f"{series}: instance {ds.SOPInstanceUID}: {keyword} holds {ds[keyword].VM} values, not {count}"
                )
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
