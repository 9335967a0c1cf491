"""Reading CTs and labels: pixel types and values, geometry, and a clear error for every bad input."""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from derived_data import DICOM_AS_NIFTI

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
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


def test_truncated_nrrd_is_refused(tmp_path: Path) -> None:
    full = tmp_path / "full.nrrd"
    sitk.WriteImage(read_ct(shared_case("ts_example_ct_sm").image), str(full), useCompression=True)
    path = _truncated_copy(full, tmp_path / "cut.nrrd")
    with pytest.raises(InputError, match=r"cut\.nrrd: image data cannot be read"):
        read_ct(path)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "zlib"])
def test_a_truncated_metaimage_is_called_truncated_not_a_missing_file(tmp_path: Path, compressed: bool) -> None:
    """ITK's reason for a cut .mha or .mhd is "No such file or directory", naming the header."""
    ct = read_ct(shared_case("ts_example_ct_sm").image)
    sitk.WriteImage(ct, str(tmp_path / "full.mha"), useCompression=compressed)
    path = _truncated_copy(tmp_path / "full.mha", tmp_path / "cut.mha")
    kind = "compressed voxel data where the header \\(CompressedDataSize\\) says" if compressed else "voxel data where"
    with pytest.raises(InputError, match=rf"cut\.mha: truncated MetaImage: \d+ bytes of {kind}") as refusal:
        read_ct(path)
    assert "No such file" not in str(refusal.value)
    sitk.WriteImage(ct, str(tmp_path / "scan.mhd"), useCompression=compressed)  # the data in scan.raw / scan.zraw
    data = tmp_path / ("scan.zraw" if compressed else "scan.raw")
    _truncated_copy(data, data)
    with pytest.raises(InputError, match=r"scan\.mhd: truncated MetaImage"):
        read_ct(tmp_path / "scan.mhd")
    data.unlink()
    with pytest.raises(InputError, match=rf"scan\.mhd: the data file '{data.name}' that its header names is not"):
        read_ct(tmp_path / "scan.mhd")


@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_a_compressed_metaimage_with_corrupt_zlib_data_is_refused_naming_it(
    tmp_path: Path, suffix: str, where: float
) -> None:
    """ITK decodes such a file into a CT with garbage slabs, printing "Uncompress failed" without a name."""
    ct = read_ct(shared_case("ts_example_ct_sm").image)
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(ct, str(path), useCompression=True)
    data = path if suffix == ".mha" else tmp_path / "scan.zraw"
    raw = bytearray(data.read_bytes())
    start = raw.index(b"ElementDataFile = LOCAL\n") + 24 if suffix == ".mha" else 0
    position = start + int((len(raw) - start) * where)
    raw[position : position + 8] = bytes(b ^ 0xA5 for b in raw[position : position + 8])
    data.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=rf"scan\{suffix}: (corrupt|truncated) compressed voxel data"):
        read_ct(path)


def test_an_intact_compressed_metaimage_reads_as_written(tmp_path: Path) -> None:
    ct = read_ct(shared_case("ts_example_ct").image)
    for name in ("scan.mha", "scan.mhd"):
        sitk.WriteImage(ct, str(tmp_path / name), useCompression=True)
        assert np.array_equal(sitk.GetArrayViewFromImage(read_ct(tmp_path / name)), sitk.GetArrayViewFromImage(ct))


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
            r"a single plane of voxels \(size \(6, 5, 1\): 1 along z\)",
        ),
        (
            "one_row.mha",  # not "a single slice": the slices have one row each
            lambda: sitk.GetImageFromArray(np.zeros((5, 1, 6), np.int16)),
            r"a single plane of voxels \(size \(6, 1, 5\): 1 along y\)",
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


def _series_with(tmp_path: Path, change: Callable[[pydicom.Dataset], None], which: slice) -> tuple[Path, list[str]]:
    """A copy of the shared JPEG 2000 series with `change` made to the files `which` picks (in name order), and the
    names of those files."""
    folder = tmp_path / "series"
    shutil.copytree(shared_case("ts_example_ct_dicom").image, folder)
    changed = sorted(folder.iterdir())[which]
    for path in changed:
        dataset = pydicom.dcmread(path)
        change(dataset)
        dataset.save_as(path)
    return folder, [path.name for path in changed]


@pytest.mark.parametrize(
    ("keyword", "tag"),
    [
        ("ImagePositionPatient", "(0020,0032)"),
        ("PixelSpacing", "(0028,0030)"),
        ("ImageOrientationPatient", "(0020,0037)"),
    ],
)
@pytest.mark.parametrize("which", [slice(None), slice(7, 8)], ids=["every file", "one file"])
def test_a_dicom_series_that_does_not_say_where_its_slices_lie_is_refused_naming_the_tag_and_files(
    tmp_path: Path, keyword: str, tag: str, which: slice
) -> None:
    """ITK would take 1 mm pixels, 1 mm slices, or space the slices from whichever positions there are (50 mm where
    one file lacks its position and the truth is 2 mm), and the label and its volumes would lie on that grid."""
    folder, stripped = _series_with(tmp_path, lambda dataset: delattr(dataset, keyword), which)
    count = len(stripped)
    with pytest.raises(InputError) as refusal:
        read_ct(folder)
    message = str(refusal.value)
    assert message.startswith(f"{folder}: DICOM series without {keyword} {tag} in {count} of 20 files (")
    assert stripped[0] in message and "guessed grid" in message


def test_a_dicom_series_whose_pixel_spacing_is_empty_is_refused_as_one_without_it(tmp_path: Path) -> None:
    """An anonymiser may blank a value instead of removing the tag: ITK then takes 1 mm pixels just the same."""
    folder, (blank,) = _series_with(tmp_path, lambda dataset: setattr(dataset, "PixelSpacing", None), slice(0, 1))
    with pytest.raises(InputError, match=rf"without PixelSpacing \(0028,0030\) in 1 of 20 files \({blank}\)"):
        read_ct(folder)


def test_a_dicom_series_with_an_unreadable_slice_position_is_refused(tmp_path: Path) -> None:
    folder, _ = _series_with(
        tmp_path, lambda dataset: setattr(dataset, "ImagePositionPatient", [1.0, 2.0]), slice(3, 4)
    )
    with pytest.raises(
        InputError, match=r"series: unreadable slice geometry \('1\.0\\\\2\.0' where 3 numbers belong\)"
    ):
        read_ct(folder)


def _cut_codestream(dataset: pydicom.Dataset) -> None:
    """Cut the JPEG 2000 codestream of a one-frame slice short by a third (as a damaged transfer would)."""
    frame = next(pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=1))
    dataset.PixelData = pydicom.encaps.encapsulate([frame[: 2 * len(frame) // 3]])


def test_a_dicom_slice_whose_jpeg2000_data_cannot_be_decoded_is_named(tmp_path: Path) -> None:
    """GDCM's reason alone is "Failed to change to Implicit Transfer Syntax", for the series as a whole."""
    folder, (damaged,) = _series_with(tmp_path, _cut_codestream, slice(11, 12))
    with pytest.raises(InputError) as refusal:
        read_ct(folder)
    message = str(refusal.value)
    assert message.startswith(f"{folder}: DICOM series cannot be read: 1 slice(s) cannot be decoded: {damaged} (")
    assert "Implicit Transfer Syntax" in message  # ITK's reason, now with the slice it concerns


@pytest.mark.parametrize("change", [-1000, 1000], ids=["short", "long"])
def test_a_dicom_slice_whose_pixel_data_has_another_length_than_its_header_needs_is_named(
    tmp_path: Path, change: int
) -> None:
    """GDCM decodes an uncompressed slice 1000 bytes short into a slice with 500 wrong voxels, without a word."""
    folder = tmp_path / "series"
    shutil.copytree(shared_case("dcmqi_ct3slice").image, folder)
    damaged = sorted(folder.iterdir())[1]
    dataset = pydicom.dcmread(damaged)
    length = len(dataset.PixelData)
    dataset.PixelData = dataset.PixelData[:change] if change < 0 else dataset.PixelData + bytes(change)
    dataset.save_as(damaged)
    with pytest.raises(InputError) as refusal:
        read_ct(folder)
    assert str(refusal.value) == (
        f"{folder}: 1 slice(s) whose pixel data does not have the length their header needs: "
        f"{damaged.name} ({length + change} bytes where its header needs {length})"
    )


def test_a_folder_of_two_series_says_once_which_it_reads_and_names_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "study"
    shutil.copytree(shared_case("ts_example_ct_dicom").image, folder)
    for slice_file in shared_case("dcmqi_ct3slice").image.iterdir():
        shutil.copy(slice_file, folder / f"other_{slice_file.name}")
    other = pydicom.dcmread(next(shared_case("dcmqi_ct3slice").image.iterdir()), stop_before_pixels=True)
    with caplog.at_level(logging.WARNING):
        ct = CanonicalCT.read(folder, max_voxels=10**8)  # the header is read first, then the series
    assert ct.array_zyx.shape[0] == 20
    warnings = [record.getMessage() for record in caplog.records if "DICOM series" in record.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{folder}: 2 DICOM series; reading the largest, series ")
    # the shared series is anonymised down to its description; the other keeps its number and UID
    assert "series 'CT Body 3.0' (20 files), not " in warnings[0]
    assert warnings[0].endswith(f"not series {other.SeriesNumber} (3 files, {other.SeriesInstanceUID})")
    assert ct.reading_warnings == (warnings[0],)
