"""read_nifti_voxels: NIfTI voxels decoded straight into the image give exactly the image ITK's reader gives."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.nifti_read import PIXEL_IDS, read_nifti_voxels
from efficientscn.imaging.read import read_image

from helpers import SharedCase, hand_made_nifti

ITK_ONLY_METADATA = {"ITK_original_direction", "ITK_original_spacing"}
"""Metadata of ITK's own types, which SimpleITK can neither show nor set."""


def _header_reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _metadata(image: sitk.Image) -> dict[str, str]:
    return {key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if key not in ITK_ONLY_METADATA}


def _assert_same_image(ours: sitk.Image | None, itk: sitk.Image) -> None:
    assert ours is not None, "read through ITK instead"
    assert ours.GetPixelID() == itk.GetPixelID()
    assert ours.GetSize() == itk.GetSize()
    assert ours.GetSpacing() == itk.GetSpacing()
    assert ours.GetOrigin() == itk.GetOrigin()
    assert ours.GetDirection() == itk.GetDirection()
    assert _metadata(ours) == _metadata(itk)
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(itk), equal_nan=True)


def _read_both(path: Path) -> tuple[sitk.Image | None, sitk.Image]:
    return read_nifti_voxels(path, _header_reader(path)), sitk.ReadImage(str(path))


def test_every_shared_nifti_file_reads_as_itk_reads_it(any_shared_case: SharedCase) -> None:
    files = [path for path in (any_shared_case.image, any_shared_case.label) if path.name.endswith((".nii", ".nii.gz"))]
    for path in files:
        _assert_same_image(*_read_both(path))


def _random_voxels(dtype: np.dtype, shape_zyx: tuple[int, int, int] = (5, 7, 9)) -> np.ndarray:
    generator = np.random.default_rng(1)
    if dtype.kind == "f":
        return generator.normal(0, 1000, shape_zyx).astype(dtype)
    info = np.iinfo(dtype)
    return generator.integers(info.min, info.max, shape_zyx, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("pixel_id", sorted(PIXEL_IDS.values()), ids=sitk.GetPixelIDValueAsString)
def test_every_datatype_on_an_oblique_grid_reads_as_itk_reads_it(tmp_path: Path, pixel_id: int, suffix: str) -> None:
    dtype = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], pixel_id)).dtype
    image = sitk.GetImageFromArray(_random_voxels(dtype))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-120.5, 33.0, -900.25))
    angle = np.radians(20)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, -1))
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(image, str(path))
    ours, itk = _read_both(path)
    _assert_same_image(ours, itk)
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(image))


@pytest.mark.parametrize("compress", [False, True], ids=["nii", "nii.gz"])
@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_either_byte_order_reads_as_stored(tmp_path: Path, order: str, compress: bool) -> None:
    voxels = _random_voxels(np.dtype(np.int16), (6, 10, 12))
    raw = hand_made_nifti(voxels, order, version=1)
    path = tmp_path / ("ct.nii.gz" if compress else "ct.nii")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    ours, itk = _read_both(path)
    _assert_same_image(ours, itk)
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), voxels)


def test_a_multi_member_gzip_file_reads_whole(tmp_path: Path) -> None:
    voxels = _random_voxels(np.dtype(np.int16), (6, 10, 12))
    raw = hand_made_nifti(voxels, "<", version=1)
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    assert np.array_equal(sitk.GetArrayViewFromImage(read_image(path)), voxels)


def test_a_scaled_file_is_left_to_itk_which_applies_the_scaling(tmp_path: Path) -> None:
    voxels = _random_voxels(np.dtype(np.int16), (4, 6, 8)) // 4
    raw = bytearray(hand_made_nifti(voxels, "<", version=1))
    struct.pack_into("<2f", raw, 112, 2.0, -1024.0)  # scl_slope, scl_inter
    path = tmp_path / "ct.nii"
    path.write_bytes(raw)
    assert read_nifti_voxels(path, _header_reader(path)) is None
    assert np.array_equal(sitk.GetArrayViewFromImage(read_image(path)), voxels * 2.0 - 1024)


@pytest.mark.parametrize("missing", [1, 500], ids=["one byte", "many voxels"])
@pytest.mark.parametrize("compress", [False, True], ids=["nii", "nii.gz"])
def test_voxel_data_cut_short_is_refused_with_both_lengths(tmp_path: Path, compress: bool, missing: int) -> None:
    """Cut before compression, so that the gzip stream is whole and only the length shows what is missing."""
    raw = hand_made_nifti(_random_voxels(np.dtype(np.int16), (6, 10, 12)), "<", version=1)
    path = tmp_path / ("ct.nii.gz" if compress else "ct.nii")
    path.write_bytes(gzip.compress(raw[:-missing]) if compress else raw[:-missing])
    expected = f"{path}: truncated NIfTI file: {len(raw) - missing} bytes (header and voxels) where the header needs"
    with pytest.raises(InputError, match=f"^{re.escape(expected)} {len(raw)}$"):
        read_nifti_voxels(path, _header_reader(path))


def test_a_gzip_stream_whose_crc_does_not_match_is_refused(tmp_path: Path) -> None:
    """Large enough for ITK to read the header before the trailer."""
    voxels = _random_voxels(np.dtype(np.int16), (40, 64, 64))
    compressed = bytearray(gzip.compress(hand_made_nifti(voxels, "<", version=1)))
    compressed[-8] ^= 0xFF  # the trailer's CRC-32
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(compressed)
    with pytest.raises(InputError, match=r"ct\.nii\.gz: truncated or corrupt gzip data \(CRC check failed"):
        read_image(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_float_voxels_are_refused_where_itk_reads_zero(tmp_path: Path, value: float) -> None:
    voxels = _random_voxels(np.dtype(np.float32))
    voxels[2, 3, 4] = value
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(path))
    assert sitk.ReadImage(str(path))[4, 3, 2] == 0
    with pytest.raises(InputError, match=r"ct\.nii\.gz: image contains 1 NaN or infinite values$"):
        read_nifti_voxels(path, _header_reader(path))


def test_a_fourth_dimension_of_one_reads_as_itk_reads_it_in_3d(tmp_path: Path) -> None:
    voxels = _random_voxels(np.dtype(np.int16), (6, 10, 12))
    raw = bytearray(hand_made_nifti(voxels, "<", version=1))
    struct.pack_into("<8h", raw, 40, 4, 12, 10, 6, 1, 1, 1, 1)  # dim[0] = 4, dim[4] = 1
    path = tmp_path / "ct.nii"
    path.write_bytes(raw)
    ours, itk = _read_both(path)
    _assert_same_image(ours, itk)
    assert ours is not None and ours.GetDimension() == 3
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), voxels)
