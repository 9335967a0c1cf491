"""The RT Structure Set of a label over the DICOM series its CT was read from: valid by dicom3tools' dciodvfy, and
read back into masks by an independent reader (dcmrtstruct2nii: pydicom, scikit-image's polygon filling, SimpleITK)
that agree with the label map."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_series import anonymised_copy, write_dicom_series

import efficientscn
from efficientscn.atomic import leftover_temporaries
from efficientscn.errors import InputError
from efficientscn.imaging.geometry import grid_of
from efficientscn.imaging.read import read_image
from efficientscn.outputs.rtstruct import is_rtstruct_file, rtstruct_problem, write_rtstruct

from helpers import dicom_headers, shared_case, skip_or_fail, sop_instance_uid

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
EXPECTED_RGB = {"liver": (230, 60, 40), "kidney": (255, 210, 0), "spleen": (40, 120, 255), "pancreas": (50, 200, 80)}
"""The organs' colours in the preview and the DICOM-SEG, which the structure set shares."""
ORGAN_OF_VALUE = {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
MIN_DICE = 0.95
"""Contours are lossy in general; ours are traced to give the label back (the tests find Dice 1.0)."""


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def _read_back(path: Path, series: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """The masks (z, y, x) an independent reader makes of the structure set, by ROI name, on the series' grid."""
    converter = pytest.importorskip("dcmrtstruct2nii", reason="the test extra installs dcmrtstruct2nii")
    monkeypatch.setattr(pydicom, "read_file", pydicom.dcmread, raising=False)  # its name for dcmread before pydicom 3
    converter.dcmrtstruct2nii(str(path), str(series), str(out), convert_original_dicom=False)
    return {
        file.name.removeprefix("mask_").removesuffix(".nii.gz"): sitk.GetArrayFromImage(sitk.ReadImage(str(file))) > 0
        for file in out.glob("mask_*.nii.gz")
    }


def _check_structure_set(
    path: Path, series: Path, label: sitk.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, float]:
    """The structure set at `path` holds one ROI per organ of `label`, named, coloured and referenced as promised,
    and reads back into masks that agree with the label; returns the Dice per organ."""
    values = sitk.GetArrayViewFromImage(label)
    present = [value for value in ORGAN_OF_VALUE if (values == value).any()]
    structure = pydicom.dcmread(path)
    assert structure.SOPClassUID == RT_STRUCTURE_SET_STORAGE and structure.Modality == "RTSTRUCT"
    assert (structure.Manufacturer, structure.ManufacturerModelName) == ("efficientscn", "EfficientSCN")
    assert structure.SoftwareVersions == efficientscn.__version__
    assert (structure.SeriesNumber, structure.StructureSetLabel) == (301, "ORGANS")
    rois = structure.StructureSetROISequence
    assert [roi.ROIName for roi in rois] == [ORGAN_OF_VALUE[value] for value in present]
    assert [int(roi.ROINumber) for roi in rois] == list(range(1, len(present) + 1))
    assert all(roi.ROIGenerationAlgorithm == "AUTOMATIC" for roi in rois)
    assert all(item.RTROIInterpretedType == "ORGAN" for item in structure.RTROIObservationsSequence)
    for roi, contours in zip(rois, structure.ROIContourSequence, strict=True):
        assert int(contours.ReferencedROINumber) == int(roi.ROINumber)
        assert tuple(int(v) for v in contours.ROIDisplayColor) == EXPECTED_RGB[roi.ROIName]

    # every contour lies in the plane of the instance it references
    headers = dicom_headers(series)
    by_uid = {sop_instance_uid(ds): ds for ds in headers}
    (frame,) = structure.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == structure.FrameOfReferenceUID
    (study,) = frame.RTReferencedStudySequence
    (referenced_series,) = study.RTReferencedSeriesSequence
    assert {item.ReferencedSOPInstanceUID for item in referenced_series.ContourImageSequence} == set(by_uid)
    for contours in structure.ROIContourSequence:
        for contour in contours.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            source = by_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            assert len(points) == int(contour.NumberOfContourPoints)
            normal = np.cross(*np.asarray(source.ImageOrientationPatient, dtype=float).reshape(2, 3))
            offsets = (points - np.asarray(source.ImagePositionPatient, dtype=float)) @ normal
            assert np.abs(offsets).max() < 1e-3

    masks = _read_back(path, series, tmp_path / "read_back", monkeypatch)
    assert sorted(masks) == sorted(ORGAN_OF_VALUE[value] for value in present)
    dice = {organ: _dice(masks[organ], values == value) for value, organ in ORGAN_OF_VALUE.items() if organ in masks}
    print(f"RT Structure Set read back by dcmrtstruct2nii, Dice per organ: {dice}")  # the figures the README quotes
    assert all(score >= MIN_DICE for score in dice.values()), dice
    return dice


def _series_and_label(case_id: str) -> tuple[Path, sitk.Image]:
    case = shared_case(case_id)
    label = sitk.ReadImage(str(case.label), sitk.sitkUInt8)
    assert grid_of(label).differences(grid_of(read_image(case.image))) == []
    return case.image, label


def test_structure_set_of_the_shared_series_reads_back_and_leaves_out_the_missing_organ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    series, label = _series_and_label("ts_example_ct_dicom")
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, 1, 3, 4}  # no kidney: no kidney ROI
    with caplog.at_level(logging.WARNING):
        path = write_rtstruct(series, label, tmp_path / "case.rtstruct.dcm")
    # the one warning: the series lacks its study and series UIDs; rt-utils' use of pydicom's deprecated
    # attributes is not the user's concern
    assert [record.name for record in caplog.records] == ["efficientscn.outputs.dicom_source"]
    assert rtstruct_problem(path) is None and is_rtstruct_file(path)
    dice = _check_structure_set(path, series, label, tmp_path, monkeypatch)
    assert sorted(dice) == ["liver", "pancreas", "spleen"]
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["case.rtstruct.dcm", "read_back"]


def _flipped(image: sitk.Image) -> sitk.Image:
    """The image mirrored along y and z in index space, in the same place: rows run anterior and slices from head
    to feet, the reverse of the usual."""
    return sitk.Flip(image, [False, True, True], flipAboutOrigin=False)


@pytest.mark.parametrize("variant", ["ras_rows_and_columns", "flipped_rows_and_slices", "rectangular_pixels"], ids=str)
def test_structure_set_over_a_series_in_another_geometry_reads_back_exactly(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 3 mm CT, whose edge voxels are many (a third of the pancreas), in orientations other than the usual LPS
    and with rectangular pixels: the reader gets the label back voxel for voxel."""
    case = shared_case("ts_example_ct_sm")  # RAS: rows and columns run the other way than in an LPS series
    ct = sitk.ReadImage(str(case.image))
    flare = sitk.ReadImage(str(case.label), sitk.sitkUInt8)
    expected_orientation = [-1, 0, 0, 0, -1, 0]
    if variant == "flipped_rows_and_slices":
        ct, flare = _flipped(ct), _flipped(flare)
        expected_orientation = [-1, 0, 0, 0, 1, 0]
    if variant == "rectangular_pixels":
        for image in (ct, flare):
            image.SetSpacing((3.0, 2.0, 3.0))  # 3 mm between columns, 2 mm between rows
    series = tmp_path / "series"
    write_dicom_series(ct, series)
    read = read_image(series)
    headers = dicom_headers(series)
    assert [float(v) for v in headers[0].ImageOrientationPatient] == pytest.approx(expected_orientation)
    if variant == "rectangular_pixels":
        assert [float(v) for v in headers[0].PixelSpacing] == [2.0, 3.0]  # rows, columns
    label = sitk.Resample(flare, read, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    values = sitk.GetArrayViewFromImage(label)
    assert set(np.unique(values)) == {0, 1, 2, 3, 4}
    assert np.count_nonzero(values) == np.count_nonzero(sitk.GetArrayViewFromImage(flare))  # nothing lost on the way

    path = write_rtstruct(series, label, tmp_path / "out" / "case.rtstruct.dcm")
    dice = _check_structure_set(path, series, label, tmp_path, monkeypatch)
    assert dice == {"liver": 1.0, "kidney": 1.0, "spleen": 1.0, "pancreas": 1.0}


def test_dciodvfy_finds_no_error_of_the_structure_set_s_own(tmp_path: Path) -> None:
    """dicom3tools' validator: errors are failures; its warnings come from the source series' own attributes."""
    if shutil.which("dciodvfy") is None:
        skip_or_fail("dciodvfy not found (Debian package dicom3tools; .ci/run installs it)")
    series, label = _series_and_label("ts_example_ct_dicom")
    path = write_rtstruct(series, label, tmp_path / "case.rtstruct.dcm")
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (report.stdout + report.stderr).splitlines()
    assert "RTStructureSet" in lines  # it recognised the IOD it checked
    assert [line for line in lines if line.startswith("Error")] == []
    warnings = [line for line in lines if line.startswith("Warning")]
    # the two it has: the anonymised source's empty PatientID and StudyID, which the structure set copies
    assert all("Patient ID" in line or "Study ID" in line for line in warnings), warnings


def test_structure_set_over_an_anonymised_series_references_it_as_the_dicom_seg_does(tmp_path: Path) -> None:
    from efficientscn.outputs.dicom_seg import write_dicom_seg

    original, label = _series_and_label("dcmqi_ct3slice")
    removed = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID", "PatientID")
    series = anonymised_copy(original, tmp_path / "anonymised", removed)
    structure = pydicom.dcmread(write_rtstruct(series, label, tmp_path / "case.rtstruct.dcm"))
    seg = pydicom.dcmread(write_dicom_seg(series, label, tmp_path / "case.seg.dcm"))
    (frame,) = structure.ReferencedFrameOfReferenceSequence
    (referenced,) = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert structure.StudyInstanceUID == seg.StudyInstanceUID and pydicom.uid.UID(seg.StudyInstanceUID).is_valid
    assert frame.FrameOfReferenceUID == seg.FrameOfReferenceUID
    assert referenced.SeriesInstanceUID == seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ContourImageSequence} == {
        str(ds.file_meta.MediaStorageSOPInstanceUID) for ds in dicom_headers(series)
    }


def test_a_label_without_organ_is_refused(tmp_path: Path) -> None:
    series, label = _series_and_label("dcmqi_ct3slice")
    empty = sitk.Image(label.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(label)
    path = tmp_path / "case.rtstruct.dcm"
    with pytest.raises(InputError, match="no organ in the label") as refused:
        write_rtstruct(series, empty, path)
    assert str(series) in str(refused.value)
    assert not path.exists() and leftover_temporaries(path) == []


def test_without_rt_utils_the_install_command_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series, label = _series_and_label("dcmqi_ct3slice")
    monkeypatch.setitem(sys.modules, "rt_utils", None)  # as if not installed
    path = tmp_path / "case.rtstruct.dcm"
    with pytest.raises(InputError, match=r"efficientscn\[rtstruct\]") as refused:
        write_rtstruct(series, label, path)
    assert str(refused.value).startswith(f"{path}: not written")
    assert not path.exists()


def test_only_a_whole_structure_set_counts_as_a_finished_output(tmp_path: Path) -> None:
    series, label = _series_and_label("dcmqi_ct3slice")
    path = write_rtstruct(series, label, tmp_path / "case.rtstruct.dcm")
    assert rtstruct_problem(path) is None
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert rtstruct_problem(path) is not None and is_rtstruct_file(path)  # damaged, but ours to replace
    ct_instance = sorted(series.iterdir())[0]
    assert rtstruct_problem(ct_instance) == "not an RT Structure Set"
    assert not is_rtstruct_file(ct_instance)
    path.write_text("not DICOM at all\n")
    assert (rtstruct_problem(path) or "").startswith("not readable as an RT Structure Set")
    assert os.path.getsize(path) > 0 and not is_rtstruct_file(path)
