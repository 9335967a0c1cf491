"""Reading CTs and labels: pixel types and values, geometry, and a clear error for every bad input."""

from __future__ import annotations

import gzip
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from derived_data import DICOM_AS_NIFTI

from efficientscn.errors import InputError
from efficientscn.imaging.geometry import grid_of
from efficientscn.imaging.read import header_size, read_ct, read_header, read_label
from efficientscn.imaging.write import write_label

from helpers import SharedCase, ct_data_file, image_from_array, shared_case


def _truncated_copy(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def test_every_shared_case_reads_as_int16_with_its_geometry(any_shared_case: SharedCase) -> None:
    ct = read_ct(any_shared_case.image)
    meta = any_shared_case.meta
    assert ct.GetPixelID() == sitk.sitkInt16
    assert list(ct.GetSize()) == meta["size_xyz"]
    assert ct.GetSpacing() == pytest.approx(meta["spacing_mm"], abs=1e-3)
    assert ct.GetOrigin() == pytest.approx(meta["origin"], abs=1e-2)
    assert ct.GetDirection() == pytest.approx(meta["direction"], abs=1e-3)
    values = sitk.GetArrayViewFromImage(ct)
    assert values.min() == meta["intensity_min"] and values.max() == meta["intensity_max"]


def test_every_shared_label_reads_as_uint8_on_its_image_grid(any_shared_case: SharedCase) -> None:
    label = read_label(any_shared_case.label)
    assert label.GetPixelID() == sitk.sitkUInt8
    assert not grid_of(label).differences(grid_of(read_ct(any_shared_case.image)))
    counts = np.bincount(sitk.GetArrayViewFromImage(label).ravel(), minlength=5)
    expected = [any_shared_case.meta["organs"][name]["voxels"] for name in ("liver", "kidney", "spleen", "pancreas")]
    assert counts[1:].tolist() == expected


def test_dicom_folder_reads_like_its_nifti_copy() -> None:
    case = shared_case("ts_example_ct_dicom")
    dicom = read_ct(case.image)
    nifti = read_ct(ct_data_file(DICOM_AS_NIFTI))
    assert not grid_of(dicom).differences(grid_of(nifti))
    assert np.array_equal(sitk.GetArrayViewFromImage(dicom), sitk.GetArrayViewFromImage(nifti))


def test_int32_ct_becomes_int16_without_changing_values() -> None:
    case = shared_case("ts_example_ct")
    raw = sitk.ReadImage(str(case.image))
    assert raw.GetPixelID() == sitk.sitkInt32
    ct = read_ct(case.image)
    assert ct.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(raw))


def test_values_beyond_int16_are_clipped_not_wrapped(tmp_path: Path) -> None:
    values = np.zeros((4, 5, 6), dtype=np.int32)
    values[0, 0, 0], values[0, 0, 1], values[0, 0, 2] = 40000, -40000, 1234
    path = tmp_path / "wide.nrrd"
    sitk.WriteImage(image_from_array(values), str(path))
    ct = sitk.GetArrayFromImage(read_ct(path))
    assert ct[0, 0, :3].tolist() == [32767, -32768, 1234]


def test_float_ct_is_rounded_to_whole_hu(tmp_path: Path) -> None:
    values = np.full((4, 5, 6), -1024.4, dtype=np.float32)
    values[1, 2, 3] = 55.6
    path = tmp_path / "float.nii.gz"
    sitk.WriteImage(image_from_array(values), str(path))
    ct = read_ct(path)
    assert grid_of(ct).spacing == pytest.approx((1.5, 1.0, 2.5))
    array = sitk.GetArrayFromImage(ct)
    assert array[1, 2, 3] == 56 and array[0, 0, 0] == -1024


def test_float_ct_with_nan_is_refused(tmp_path: Path) -> None:
    values = np.zeros((4, 5, 6), dtype=np.float32)
    values[2, 2, 2] = np.nan
    path = tmp_path / "nan.mha"
    sitk.WriteImage(image_from_array(values), str(path))
    with pytest.raises(InputError, match=r"nan\.mha.*NaN"):
        read_ct(path)


def test_label_values_outside_flare_convention_are_refused(tmp_path: Path) -> None:
    values = np.zeros((4, 5, 6), dtype=np.uint16)
    values[1, 1, 1], values[1, 1, 2] = 4, 5  # 4 is the last FLARE label, 5 the first outside
    path = tmp_path / "btcv.nii.gz"
    sitk.WriteImage(image_from_array(values), str(path))
    with pytest.raises(InputError, match=r"btcv\.nii\.gz: label values \[5\] outside 0\.\.4"):
        read_label(path)


def test_fractional_label_values_are_refused(tmp_path: Path) -> None:
    values = np.zeros((4, 5, 6), dtype=np.float32)
    values[1, 1, 1] = 0.5
    path = tmp_path / "soft.nii.gz"
    sitk.WriteImage(image_from_array(values), str(path))
    with pytest.raises(InputError, match="non-integer"):
        read_label(path)


def test_integral_float_labels_are_accepted(tmp_path: Path) -> None:
    values = np.zeros((4, 5, 6), dtype=np.float64)
    values[1, 1, 1], values[2, 2, 2] = 4.0, 2.0
    path = tmp_path / "float_label.nii.gz"
    sitk.WriteImage(image_from_array(values), str(path))
    label = read_label(path)
    assert label.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(label), values.astype(np.uint8))


def test_truncated_gzip_nifti_is_refused(tmp_path: Path) -> None:
    path = _truncated_copy(shared_case("ts_example_ct").image, tmp_path / "cut.nii.gz")
    with pytest.raises(InputError, match=r"cut\.nii\.gz: truncated"):
        read_ct(path)


def test_truncated_plain_nifti_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "full.nii"
    with gzip.open(shared_case("ts_example_ct_sm").image) as stream:
        plain.write_bytes(stream.read())
    path = _truncated_copy(plain, tmp_path / "cut.nii")
    with pytest.raises(InputError, match=r"cut\.nii: truncated NIfTI file"):
        read_ct(path)


def test_multi_member_gzip_nifti_still_reads(tmp_path: Path) -> None:
    """A valid .nii.gz whose gzip trailer does not give the full length is checked by decompressing it."""
    with gzip.open(shared_case("ts_example_ct_sm").image) as stream:
        data = stream.read()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    expected = sitk.GetArrayFromImage(read_ct(shared_case("ts_example_ct_sm").image))
    assert np.array_equal(sitk.GetArrayFromImage(read_ct(path)), expected)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_truncated_mha_and_nrrd_are_refused(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    sitk.WriteImage(read_ct(shared_case("ts_example_ct_sm").image), str(full), useCompression=True)
    path = _truncated_copy(full, tmp_path / f"cut{suffix}")
    with pytest.raises(InputError, match=rf"cut\{suffix}: image data cannot be read"):
        read_ct(path)


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii.gz"
    path.write_text("not an image\n")
    with pytest.raises(InputError, match=r"notes\.nii\.gz: not a readable image"):
        read_ct(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"absent\.nii\.gz: no such file"):
        read_ct(tmp_path / "absent.nii.gz")


@pytest.mark.parametrize(
    ("name", "make_image", "problem"),
    [
        ("slice.nii.gz", lambda: sitk.GetImageFromArray(np.zeros((5, 6), np.int16)), r"2-D image"),
        (
            "one_slice.mha",
            lambda: sitk.GetImageFromArray(np.zeros((1, 5, 6), np.int16)),
            r"2-D image \(size \(6, 5, 1\)",
        ),
        ("series.nii.gz", lambda: sitk.Image([6, 5, 4, 2], sitk.sitkInt16), r"4-D image"),
        (
            "rgb.nii.gz",
            lambda: sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True),
            r"3-component pixels",
        ),
        ("complex.mha", lambda: sitk.GetImageFromArray(np.zeros((4, 5, 6), np.complex64)), r"2-component pixels"),
    ],
)
def test_what_is_not_a_single_channel_volume_is_refused(tmp_path: Path, name: str, make_image, problem: str) -> None:
    path = tmp_path / name
    sitk.WriteImage(make_image(), str(path))
    with pytest.raises(InputError, match=rf"{re.escape(name)}: {problem}"):
        read_ct(path)


def test_non_orthonormal_direction_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sheared.mha"
    sitk.WriteImage(image_from_array(np.zeros((4, 5, 6), np.int16), direction=(1, 0, 0, 0.5, 1, 0, 0, 0, 1)), str(path))
    with pytest.raises(InputError, match=r"sheared\.mha: direction .* not orthonormal"):
        read_ct(path)


def test_zero_spacing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flat.mha"
    sitk.WriteImage(image_from_array(np.zeros((4, 5, 6), np.int16), spacing=(1.0, 1.0, 1.0)), str(path))
    path.write_bytes(path.read_bytes().replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 0 1 1"))
    with pytest.raises(InputError, match=r"flat\.mha: .*[Ss]pacing"):
        read_ct(path)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"empty folder"):
        read_ct(tmp_path)


def test_folder_without_dicom_is_refused(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no DICOM here")
    with pytest.raises(InputError, match=rf"{tmp_path.name}: no DICOM series"):
        read_ct(tmp_path)


def test_dicom_folder_with_a_truncated_slice_is_refused(tmp_path: Path) -> None:
    source = shared_case("dcmqi_ct3slice").image
    folder = tmp_path / "series"
    shutil.copytree(source, folder)
    first = sorted(folder.iterdir())[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    with pytest.raises(InputError, match=r"series: 1 DICOM file\(s\) cannot be read .*01\.dcm"):
        read_ct(folder)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    shutil.copytree(shared_case("ts_example_ct_dicom").image, folder)
    slices = sorted(folder.iterdir(), key=lambda p: p.name)
    slices[len(slices) // 2].unlink()
    assert sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))  # still a readable series ...
    with pytest.raises(InputError, match=r"series: slice positions are not evenly spaced"):
        read_ct(folder)  # ... but a stretched one


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16])
def test_a_label_map_given_as_a_ct_is_refused_as_such(tmp_path: Path, dtype: type) -> None:
    """As when the input and output folders of predict are swapped; a CT always has air, far from 0-4."""
    label = np.zeros((20, 30, 40), dtype)
    label[5:10, 5:10, 5:10], label[12:15, 12:15, 12:15] = 1, 4
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(image_from_array(label), str(path))
    with pytest.raises(InputError, match=r"labels\.nii\.gz: holds only the values 0-4: a label map, not a CT"):
        read_ct(path)
    assert read_label(path).GetSize() == (40, 30, 20)
    blank = tmp_path / "blank.nii.gz"  # one value only is not evidently a label map (a blank CT may be one)
    sitk.WriteImage(image_from_array(np.zeros((20, 30, 40), dtype)), str(blank))
    assert read_ct(blank).GetPixelID() == sitk.sitkInt16


def test_names_that_are_not_utf8_are_read_and_written_instead_of_aborting_the_process(tmp_path: Path) -> None:
    """ITK aborts the whole process (a C++ exception) on such a name; they are reached through plain-named links."""
    case = shared_case("ts_example_ct_sm")
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/dossier_\xe9t\xe9"))  # Latin-1 bytes: not UTF-8
    folder.mkdir()
    ct_path = folder / os.fsdecode(b"scan_\xff_0000.nii.gz")
    shutil.copy(case.image, ct_path)
    ct = read_ct(ct_path)
    assert ct.GetSize() == tuple(case.meta["size_xyz"])
    assert header_size(ct_path) == ct.GetSize() and read_header(ct_path).grid == grid_of(ct)
    label = folder / os.fsdecode(b"scan_\xff.nii.gz")
    write_label(sitk.Cast(ct > 0, sitk.sitkUInt8), label)
    assert read_label(label).GetSize() == ct.GetSize()
    assert sorted(os.listdir(os.fsencode(folder))) == [b"scan_\xff.nii.gz", b"scan_\xff_0000.nii.gz"]  # no temporary


def test_a_dicom_series_with_a_slice_whose_name_is_not_utf8_is_read(tmp_path: Path) -> None:
    source = shared_case("ts_example_ct_dicom").image
    folder = tmp_path / "series"
    shutil.copytree(source, folder)
    first = sorted(folder.iterdir())[0]
    first.rename(folder / os.fsdecode(b"slice_\xff.dcm"))
    assert read_ct(folder).GetSize() == read_ct(source).GetSize()
    assert header_size(folder) == read_ct(source).GetSize()


def test_a_metaimage_with_a_negative_spacing_is_refused_rather_than_flipped(tmp_path: Path) -> None:
    """ITK would read ElementSpacing -1 as spacing 1 with a flipped direction: another grid than the file states."""
    sitk.WriteImage(image_from_array(np.zeros((10, 20, 30), np.int16), (1.0, 1.0, 1.0)), str(tmp_path / "a.mha"))
    text = (tmp_path / "a.mha").read_bytes()
    assert b"ElementSpacing = 1 1 1" in text
    (tmp_path / "negative.mha").write_bytes(text.replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 -1 1"))
    with pytest.raises(InputError, match=r"negative\.mha: spacing \(1\.0, -1\.0, 1\.0\) \(ElementSpacing\) is not"):
        read_ct(tmp_path / "negative.mha")
    assert read_ct(tmp_path / "a.mha").GetSpacing() == (1.0, 1.0, 1.0)


def test_a_metaimage_header_whose_name_is_not_utf8_finds_its_data_file(tmp_path: Path) -> None:
    case = shared_case("ts_example_ct_sm")
    sitk.WriteImage(read_ct(case.image), str(tmp_path / "scan.mhd"))  # scan.mhd names scan.raw
    header = tmp_path / os.fsdecode(b"scan_\xff.mhd")
    (tmp_path / "scan.mhd").rename(header)
    assert read_ct(header).GetSize() == tuple(case.meta["size_xyz"])
