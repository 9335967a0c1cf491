"""The DICOM-SEG of a label over the DICOM series its CT was read from: read back voxel for voxel by position."""

from __future__ import annotations

import hashlib
import locale
import logging
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import efficientscn
from efficientscn.atomic import leftover_temporaries
from efficientscn.errors import InputError
from efficientscn.imaging.geometry import grid_of
from efficientscn.imaging.read import read_image
from efficientscn.labels import ORGAN_NAMES
from efficientscn.outputs.dicom_seg import dicom_seg_problem, write_dicom_seg

from helpers import dicom_headers, seg_label_volume, seg_source_slices, shared_case, sop_instance_uid

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPECTED_CODES = {"liver": "10200004", "kidney": "64033007", "spleen": "78961009", "pancreas": "15776009"}
EXPECTED_RGB = {"liver": (230, 60, 40), "kidney": (255, 210, 0), "spleen": (40, 120, 255), "pancreas": (50, 200, 80)}
"""Red, yellow, blue, green: the preview's colours, which the SEG shares."""
ANONYMISED = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "SOPInstanceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "SliceThickness",
)
"""What the anonymised copy lacks (GDCM still groups its files into one series without a SeriesInstanceUID)."""


def _series_and_label(case_id: str) -> tuple[Path, sitk.Image, sitk.Image]:
    """A shared DICOM series, the CT `read_image` makes of it and its FLARE label (checked to lie on that grid)."""
    case = shared_case(case_id)
    ct = read_image(case.image)
    label = sitk.ReadImage(str(case.label), sitk.sitkUInt8)
    assert grid_of(label).differences(grid_of(ct)) == []
    return case.image, ct, label


def _check_uid(written: str, source: pydicom.Dataset, keyword: str) -> None:
    """A series-level UID of the SEG is the source's, or a valid generated one where the source's is empty."""
    if source.get(keyword):
        assert written == source.get(keyword)
    else:
        assert written and pydicom.uid.UID(written).is_valid


def _check_seg(path: Path, series: Path, ct: sitk.Image, label: sitk.Image, headers: list[pydicom.Dataset]) -> None:
    """The SEG at `path` is the BINARY SEG of `label` over `series`: segments, references, voxels."""
    seg = highdicom.seg.segread(path)
    values = sitk.GetArrayViewFromImage(label)
    present = [value for value in ORGAN_NAMES if (values == value).any()]
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY" and seg.BitsAllocated == 1
    assert (seg.SeriesNumber, seg.SeriesDescription, seg.InstanceNumber) == (300, "EfficientSCN organs", 1)
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.DeviceSerialNumber) == (
        "efficientscn",
        "EfficientSCN",
        "none",
    )
    assert seg.SoftwareVersions == efficientscn.__version__

    assert [int(item.SegmentNumber) for item in seg.SegmentSequence] == list(range(1, len(present) + 1))
    assert [item.SegmentLabel for item in seg.SegmentSequence] == [ORGAN_NAMES[value] for value in present]
    for item in seg.SegmentSequence:
        organ = item.SegmentLabel
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == ("91723000", "SCT")
        assert (kind.CodeValue, kind.CodingSchemeDesignator) == (EXPECTED_CODES[organ], "SCT")
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("EfficientSCN", efficientscn.__version__)
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == codes.cid7162.ArtificialIntelligence.value
        rgb = highdicom.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.subtract(rgb, EXPECTED_RGB[organ])).max() <= 1

    (referenced,) = seg.ReferencedSeriesSequence
    _check_uid(seg.StudyInstanceUID, headers[0], "StudyInstanceUID")
    _check_uid(seg.FrameOfReferenceUID, headers[0], "FrameOfReferenceUID")
    _check_uid(referenced.SeriesInstanceUID, headers[0], "SeriesInstanceUID")
    assert seg.SeriesInstanceUID != referenced.SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == {
        sop_instance_uid(ds) for ds in headers
    }

    rebuilt = seg_label_volume(seg, ct, seg_source_slices(headers, ct))
    assert np.array_equal(rebuilt, values)
    # bit-packed: at most one bit per pixel of each frame, plus the header
    assert path.stat().st_size < int(seg.NumberOfFrames) * seg.Rows * seg.Columns / 8 + 200_000


@pytest.mark.parametrize("case_id", ["ts_example_ct_dicom", "dcmqi_ct3slice"])
def test_seg_of_the_shared_series_reads_back_voxel_for_voxel(case_id: str, tmp_path: Path) -> None:
    series, ct, label = _series_and_label(case_id)
    path = write_dicom_seg(series, label, tmp_path / f"{case_id}.seg.dcm")
    assert path == tmp_path / f"{case_id}.seg.dcm"
    _check_seg(path, series, ct, label, dicom_headers(series))
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [path.name]  # no temporary left


def _write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """A CT series of `image`, one file per z slice, in shuffled file order, with the position of each slice
    (SimpleITK's "Dicom Series From Array" example)."""
    folder.mkdir()
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    shared = {
        "0008|0016": CT_IMAGE_STORAGE,
        "0008|0060": "CT",
        "0010|0010": "Oblique^Phantom",
        "0010|0020": "OBLIQUE1",
        "0020|000d": generate_uid(),
        "0020|000e": generate_uid(),
        "0020|0052": generate_uid(),
        "0020|0037": "\\".join(f"{v:.12g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": f"{image.GetSpacing()[2]:.12g}",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    order = np.random.default_rng(0).permutation(image.GetDepth())
    process_locale = locale.setlocale(locale.LC_ALL)
    try:
        for file_number, z in enumerate(order):
            plane = image[:, :, int(z)]
            for key, value in shared.items():
                plane.SetMetaData(key, value)
            position = image.TransformIndexToPhysicalPoint((0, 0, int(z)))
            plane.SetMetaData("0020|0032", "\\".join(f"{v:.12g}" for v in position))
            plane.SetMetaData("0020|0013", str(int(z) + 1))
            plane.SetMetaData("0008|0018", generate_uid())
            writer.SetFileName(str(folder / f"slice{file_number:03d}.dcm"))
            writer.Execute(plane)
    finally:  # GDCM's DICOM writer leaves the process in the C locale, where Python reads text as ASCII
        locale.setlocale(locale.LC_ALL, process_locale)


def test_seg_of_an_oblique_series_reads_back_voxel_for_voxel(tmp_path: Path) -> None:
    case = shared_case("ts_example_ct_sm_oblique")
    original = sitk.ReadImage(str(case.image))
    assert not np.allclose(np.abs(original.GetDirection()), np.eye(3).ravel(), atol=0.05)  # oblique indeed
    series = tmp_path / "oblique_series"
    _write_dicom_series(original, series)
    ct = read_image(series)
    assert ct.GetSize() == (151, 140, 47)
    flare = sitk.ReadImage(str(case.label), sitk.sitkUInt8)
    assert grid_of(flare).differences(grid_of(ct)) == []
    label = sitk.Resample(flare, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    assert np.array_equal(sitk.GetArrayViewFromImage(label), sitk.GetArrayViewFromImage(flare))
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, 1, 2, 3, 4}

    path = write_dicom_seg(series, label, tmp_path / "out" / "oblique.seg.dcm")
    headers = dicom_headers(series)
    _check_seg(path, series, ct, label, headers)
    seg = highdicom.seg.segread(path)
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == pytest.approx([float(v) for v in headers[0].ImageOrientationPatient])


def _sha256(folder: Path) -> dict[str, str]:
    return {file.name: hashlib.sha256(file.read_bytes()).hexdigest() for file in sorted(folder.iterdir())}


def test_anonymised_series_gets_its_missing_attributes_filled_in_memory_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    original, ct, label = _series_and_label("dcmqi_ct3slice")
    series = tmp_path / "anonymised"
    series.mkdir()
    for file in sorted(original.iterdir()):
        ds = pydicom.dcmread(file)
        for keyword in ANONYMISED:
            assert keyword in ds
            delattr(ds, keyword)
        ds.save_as(series / file.name)
    assert grid_of(read_image(series)).differences(grid_of(ct)) == []
    before = _sha256(series)

    caplog.set_level(logging.INFO, logger="efficientscn.outputs.dicom_seg")
    path = write_dicom_seg(series, label, tmp_path / "anonymised.seg.dcm")

    assert _sha256(series) == before
    (record,) = [r for r in caplog.records if r.name == "efficientscn.outputs.dicom_seg"]
    assert record.levelno == logging.INFO and str(series) in record.getMessage()
    for keyword in ANONYMISED:
        assert keyword in record.getMessage()

    # the SEG references the instances by the UIDs of their file meta information, the generated study,
    # series and frame of reference UIDs are valid and shared by all of them, and the patient is left empty
    headers = dicom_headers(series)
    seg = highdicom.seg.segread(path)
    meta_uids = {str(ds.file_meta.MediaStorageSOPInstanceUID) for ds in headers}
    (referenced,) = seg.ReferencedSeriesSequence
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == meta_uids
    for uid in (seg.StudyInstanceUID, seg.FrameOfReferenceUID, referenced.SeriesInstanceUID):
        assert pydicom.uid.UID(uid).is_valid
    assert len({seg.StudyInstanceUID, seg.FrameOfReferenceUID, referenced.SeriesInstanceUID}) == 3
    assert seg.PatientName == "" and seg.PatientID == "" and seg.AccessionNumber == ""
    assert np.array_equal(seg_label_volume(seg, ct, seg_source_slices(headers, ct)), sitk.GetArrayViewFromImage(label))


def _shifted(label: sitk.Image) -> sitk.Image:
    moved = sitk.Image(label)
    moved.SetOrigin(label.TransformContinuousIndexToPhysicalPoint((0.5, 0.0, 0.0)))
    return moved


def _with_direction(label: sitk.Image, direction: tuple[float, ...]) -> sitk.Image:
    turned = sitk.Image(label)
    turned.SetDirection(direction)
    return turned


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        (lambda label: label[:, :, :2], "2 label slices"),
        (lambda label: label[:, :-1, :], "rows x"),
        (_shifted, "not at the start of a label slice"),
        (lambda label: _with_direction(label, (0, 1, 0, 1, 0, 0, 0, 0, -1)), "image orientation"),
        (lambda label: sitk.Cast(label, sitk.sitkInt16), "expected a uint8 label map"),
        (lambda label: label + 5, "label value 6 outside 0..4"),
    ],
    ids=["fewer_slices", "fewer_rows", "shifted_half_voxel", "transposed", "not_uint8", "value_above_4"],
)
def test_label_off_the_series_grid_is_refused(variant, reason: str, tmp_path: Path) -> None:
    series, _, label = _series_and_label("dcmqi_ct3slice")
    path = tmp_path / "case.seg.dcm"
    with pytest.raises(InputError, match=reason) as refused:
        write_dicom_seg(series, variant(label), path)
    assert str(series) in str(refused.value)
    assert not path.exists() and leftover_temporaries(path) == []


def test_label_without_organ_is_refused(tmp_path: Path) -> None:
    series, _, label = _series_and_label("dcmqi_ct3slice")
    empty = sitk.Image(label.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(label)
    path = tmp_path / "case.seg.dcm"
    with pytest.raises(InputError, match="no organ in the label: no DICOM-SEG written") as refused:
        write_dicom_seg(series, empty, path)
    assert str(series) in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    series, ct, label = _series_and_label("dcmqi_ct3slice")
    path = tmp_path / "case.seg.dcm"
    path.write_bytes(b"an older SEG")
    with pytest.raises(FileExistsError, match="already exists"):
        write_dicom_seg(series, label, path)
    assert path.read_bytes() == b"an older SEG"
    write_dicom_seg(series, label, path, overwrite=True)
    _check_seg(path, series, ct, label, dicom_headers(series))
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [path.name] and leftover_temporaries(path) == []


def test_failure_while_writing_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series, _, label = _series_and_label("dcmqi_ct3slice")
    path = tmp_path / "case.seg.dcm"

    def fail(self: object, filename: Path, *args: object, **kwargs: object) -> None:
        Path(filename).write_bytes(b"half a SEG")  # the temporary exists when the write fails
        raise OSError("disk full")

    monkeypatch.setattr(highdicom.seg.Segmentation, "save_as", fail)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_seg(series, label, path)
    assert list(tmp_path.iterdir()) == []


def test_only_a_whole_seg_counts_as_a_finished_output(tmp_path: Path) -> None:
    """What a resumed `predict --format dicom-seg` keeps: a SEG that reads whole; not a cut one, a CT instance, text."""
    series, _, label = _series_and_label("dcmqi_ct3slice")
    path = write_dicom_seg(series, label, tmp_path / "case.seg.dcm")
    assert dicom_seg_problem(path) is None
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 200])
    assert dicom_seg_problem(path) is not None
    ct_instance = sorted(series.iterdir())[0]
    assert dicom_seg_problem(ct_instance) == "not a DICOM Segmentation object"
    path.write_text("not DICOM at all\n")
    problem = dicom_seg_problem(path)
    assert problem is not None and problem.startswith("not a readable DICOM-SEG")
