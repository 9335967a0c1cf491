"""The DICOM-SEG of a label over the DICOM series its CT was read from: read back voxel for voxel by position."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_series import anonymised_copy, write_dicom_series
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import efficientscn
from efficientscn.atomic import leftover_temporaries
from efficientscn.errors import InputError
from efficientscn.imaging.geometry import grid_of
from efficientscn.imaging.read import read_image
from efficientscn.outputs.dicom_seg import dicom_seg_problem, write_dicom_seg

from helpers import dicom_headers, seg_label_volume, seg_source_slices, shared_case, sop_instance_uid

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
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
    """A series-level UID of the SEG is the source's, or a valid derived one where the source's is empty."""
    if source.get(keyword):
        assert written == source.get(keyword)
    else:
        assert written and pydicom.uid.UID(written).is_valid


def _check_seg(path: Path, series: Path, ct: sitk.Image, label: sitk.Image, headers: list[pydicom.Dataset]) -> None:
    """The SEG at `path` is the BINARY SEG of `label` over `series`: segments, references, voxels."""
    seg = highdicom.seg.segread(path)
    values = sitk.GetArrayViewFromImage(label)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY" and seg.BitsAllocated == 1
    assert (seg.SeriesNumber, seg.SeriesDescription, seg.InstanceNumber) == (300, "EfficientSCN organs", 1)
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.DeviceSerialNumber) == (
        "efficientscn",
        "EfficientSCN",
        "none",
    )
    assert seg.SoftwareVersions == efficientscn.__version__

    # the segment numbers are the FLARE label values, all four whatever organs the label holds
    assert [int(item.SegmentNumber) for item in seg.SegmentSequence] == [1, 2, 3, 4]
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["liver", "kidney", "spleen", "pancreas"]
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


def test_seg_of_an_oblique_series_reads_back_voxel_for_voxel(tmp_path: Path) -> None:
    case = shared_case("ts_example_ct_sm_oblique")
    original = sitk.ReadImage(str(case.image))
    assert not np.allclose(np.abs(original.GetDirection()), np.eye(3).ravel(), atol=0.05)  # oblique indeed
    series = tmp_path / "oblique_series"
    write_dicom_series(original, series)
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


def _anonymised(tmp_path: Path, name: str = "anonymised", *, meta_uids: bool = True) -> Path:
    original, _, _ = _series_and_label("dcmqi_ct3slice")
    for file in original.iterdir():
        assert all(keyword in pydicom.dcmread(file, stop_before_pixels=True) for keyword in ANONYMISED)
    return anonymised_copy(original, tmp_path / name, ANONYMISED, meta_uids=meta_uids)


SOURCE_LOGGER = "efficientscn.outputs.dicom_source"


def test_anonymised_series_gets_its_missing_attributes_filled_in_memory_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, ct, label = _series_and_label("dcmqi_ct3slice")
    series = _anonymised(tmp_path)
    assert grid_of(read_image(series)).differences(grid_of(ct)) == []
    before = _sha256(series)

    caplog.set_level(logging.INFO, logger=SOURCE_LOGGER)
    path = write_dicom_seg(series, label, tmp_path / "anonymised.seg.dcm")

    assert _sha256(series) == before
    records = [r for r in caplog.records if r.name == SOURCE_LOGGER]
    (warning,) = [r for r in records if r.levelno == logging.WARNING]  # shown also under predict -q
    (info,) = [r for r in records if r.levelno == logging.INFO]
    assert str(series) in warning.getMessage() and "cannot attach the DICOM-SEG to that series by UID" in (
        warning.getMessage()
    )
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert keyword in warning.getMessage()
    for keyword in set(ANONYMISED) - {"StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"}:
        assert keyword in info.getMessage()

    # the SEG references the instances by the UIDs of their file meta information, the derived study,
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


def _references(seg: highdicom.seg.Segmentation) -> tuple[str, str, str, frozenset[str]]:
    """What ties a SEG to its series: study, frame of reference, series and instance UIDs."""
    (referenced,) = seg.ReferencedSeriesSequence
    instances = frozenset(item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence)
    return seg.StudyInstanceUID, seg.FrameOfReferenceUID, referenced.SeriesInstanceUID, instances


@pytest.mark.parametrize("meta_uids", [True, False], ids=["instance_uids_in_file_meta", "no_instance_uid_at_all"])
def test_uids_an_anonymised_series_lacks_are_the_same_on_every_run_and_differ_between_series(
    meta_uids: bool, tmp_path: Path
) -> None:
    """Two runs over one series (also copied elsewhere) reference it alike; from its instance UIDs where its files
    hold them, else from its pixel data: a different series gets different references."""
    _, _, label = _series_and_label("dcmqi_ct3slice")
    first = _anonymised(tmp_path, "first", meta_uids=meta_uids)
    if not meta_uids:
        assert all(not ds.file_meta.MediaStorageSOPInstanceUID for ds in dicom_headers(first))
    again = _anonymised(tmp_path, "again", meta_uids=meta_uids)  # the same series in another folder
    runs = [
        _references(highdicom.seg.segread(write_dicom_seg(series, label, tmp_path / f"{name}.seg.dcm")))
        for name, series in (("one", first), ("two", first), ("three", again))
    ]
    assert runs[0] == runs[1] == runs[2]
    assert all(pydicom.uid.UID(uid).is_valid for uid in (*runs[0][:3], *runs[0][3]))

    other = _anonymised(tmp_path, "other", meta_uids=meta_uids)  # another series: one pixel changed
    for file in sorted(other.iterdir())[:1]:
        ds = pydicom.dcmread(file)
        pixels = ds.pixel_array.copy()
        pixels[0, 0] += 1
        ds.PixelData = pixels.tobytes()
        if meta_uids:
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(file)
    study, frame, series_uid, instances = _references(
        highdicom.seg.segread(write_dicom_seg(other, label, tmp_path / "other.seg.dcm"))
    )
    assert study != runs[0][0] and frame != runs[0][1] and series_uid != runs[0][2]
    assert len(instances & runs[0][3]) == 2  # the two slices left as they were keep their UIDs


def test_segment_numbers_are_the_label_values_for_a_multiclass_reader(tmp_path: Path) -> None:
    """A case without a kidney: a multi-class reader (pydicom-seg) turns segment numbers into values, so the spleen
    must stay 3 and the empty kidney segment must not trouble it."""
    pydicom_seg = pytest.importorskip("pydicom_seg_rb", reason="the test extra installs pydicom-seg-rb")
    series, ct, label = _series_and_label("ts_example_ct_dicom")
    values = sitk.GetArrayViewFromImage(label)
    assert set(np.unique(values)) == {0, 1, 3, 4}  # no kidney
    path = write_dicom_seg(series, label, tmp_path / "case.seg.dcm")

    result = pydicom_seg.MultiClassReader().read(pydicom.dcmread(path))
    assert sorted(result.segment_infos) == [1, 2, 3, 4]
    assert result.segment_infos[2].SegmentLabel == "kidney"
    # its volume covers the frames it holds: placed on the CT's grid by its own geometry
    read_back = sitk.Resample(result.image, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    assert np.array_equal(sitk.GetArrayViewFromImage(read_back), values)


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
    assert problem is not None and problem.startswith("not readable as a DICOM Segmentation object")


@pytest.mark.parametrize(
    ("keyword", "value", "reason"),
    [
        ("StudyDate", "yesterday", "highdicom cannot build one over"),  # an anonymiser's placeholder
        ("ImageOrientationPatient", [1, 0, 0, 0, 1, 0, 0], "ImageOrientationPatient holds 7 values, not 6"),
    ],
    ids=["bad_date", "seven_direction_cosines"],
)
def test_a_seg_that_cannot_be_built_names_its_file_and_the_reason_in_one_line(
    keyword: str, value: object, reason: str, tmp_path: Path
) -> None:
    """Source headers highdicom or the placing of planes cannot take: an InputError (one line in the batch's log)
    naming the SEG and its series, not a traceback."""
    original, _, label = _series_and_label("dcmqi_ct3slice")
    series = anonymised_copy(original, tmp_path / "odd", ())
    for file in series.iterdir():
        ds = pydicom.dcmread(file)
        with warnings.catch_warnings():  # pydicom's own warning about the value this test writes
            warnings.simplefilter("ignore", UserWarning)
            setattr(ds, keyword, value)
        ds.save_as(file)
    path = tmp_path / "out" / "case.seg.dcm"
    with pytest.raises(InputError) as refused:
        write_dicom_seg(series, label, path)
    message = str(refused.value)
    assert str(series) in message and reason in message
    if keyword == "StudyDate":
        assert message.startswith(f"{path}: DICOM-SEG not written") and "yesterday" in message
    assert not path.exists() and leftover_temporaries(path) == []
