"""check_nifti_complete: refuse .nii / .nii.gz files cut short, which ITK's NIfTI reader would silently pad with 0."""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.nifti_check import check_nifti_complete

from helpers import hand_made_nifti

SHAPE_ZYX = (8, 16, 16)
VOXELS = np.random.default_rng(0).integers(-1000, 1000, SHAPE_ZYX, dtype=np.int16)
"""Random voxels, so that the deflate stream is long and a cut in its middle stays inside it."""


def _itk_nifti(path: Path) -> Path:
    """VOXELS written by SimpleITK (NIfTI-1; gzip-compressed when the name ends in .gz)."""
    sitk.WriteImage(sitk.GetImageFromArray(VOXELS), str(path))
    return path


def _itk_nifti_bytes(tmp_path: Path) -> bytes:
    """The uncompressed bytes of an ITK-written NIfTI-1 file of VOXELS: header, extension flag, voxel data."""
    return _itk_nifti(tmp_path / "source.nii").read_bytes()


def _named(path: Path, problem: str) -> str:
    """A regex for an error message that starts with the file's path and goes on with `problem` (a regex)."""
    return rf"^{re.escape(str(path))}: {problem}"


def _short_by(complete: int, missing: int) -> str:
    return rf"truncated NIfTI file: {complete - missing} bytes \(header and voxels\) where the header needs {complete}$"


# complete files


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_a_complete_itk_written_file_passes(tmp_path: Path, name: str) -> None:
    path = _itk_nifti(tmp_path / name)
    assert check_nifti_complete(path) is None
    assert check_nifti_complete(str(path)) is None


@pytest.mark.parametrize("split", [100, 1000], ids=["inside the header", "inside the voxels"])
def test_a_complete_multi_member_gzip_passes(tmp_path: Path, split: int) -> None:
    """Concatenated gzip members are one valid file; the last member's length field then does not match the
    header, so the whole stream has to be measured."""
    raw = _itk_nifti_bytes(tmp_path)
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(gzip.compress(raw[:split]) + gzip.compress(raw[split:]))
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), VOXELS)  # ITK reads it whole
    assert check_nifti_complete(path) is None


def test_plain_nifti_bytes_under_a_gz_name_are_checked_as_plain_nifti(tmp_path: Path) -> None:
    """Some tools write uncompressed NIfTI under .nii.gz; the gzip magic, not the name, decides."""
    raw = _itk_nifti_bytes(tmp_path)
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(raw)
    assert check_nifti_complete(path) is None
    path.write_bytes(raw[:-10])
    with pytest.raises(InputError, match=_named(path, _short_by(len(raw), 10))):
        check_nifti_complete(path)


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_a_nifti1_file_in_either_byte_order_is_checked_against_its_own_header(tmp_path: Path, order: str) -> None:
    raw = hand_made_nifti(VOXELS, order, version=1)
    path = tmp_path / "ct.nii"
    path.write_bytes(raw)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), VOXELS)  # a real NIfTI-1 file
    assert check_nifti_complete(path) is None
    path.write_bytes(raw[:-10])
    with pytest.raises(InputError, match=_named(path, _short_by(len(raw), 10))):
        check_nifti_complete(path)


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("compress", [False, True], ids=["nii", "nii.gz"])
def test_a_nifti2_file_in_either_byte_order_is_checked_against_its_own_header(
    tmp_path: Path, order: str, compress: bool
) -> None:
    raw = hand_made_nifti(VOXELS, order, version=2)
    path = tmp_path / ("ct.nii.gz" if compress else "ct.nii")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    assert check_nifti_complete(path) is None
    cut = raw[:-10]
    path.write_bytes(gzip.compress(cut) if compress else cut)
    with pytest.raises(InputError, match=_named(path, _short_by(len(raw), 10))):
        check_nifti_complete(path)


# truncated files


@pytest.mark.parametrize("missing", [1, 2000], ids=["one byte", "half the voxels"])
def test_a_plain_nifti_missing_voxel_bytes_is_refused_naming_the_file_and_both_lengths(
    tmp_path: Path, missing: int
) -> None:
    path = _itk_nifti(tmp_path / "ct.nii")
    complete = path.read_bytes()
    path.write_bytes(complete[:-missing])
    with pytest.raises(InputError, match=_named(path, _short_by(len(complete), missing))):
        check_nifti_complete(path)


def test_a_gzip_nifti_cut_in_the_middle_of_its_deflate_stream_is_refused(tmp_path: Path) -> None:
    path = _itk_nifti(tmp_path / "ct.nii.gz")
    cut = path.read_bytes()[: path.stat().st_size // 2]
    assert len(zlib.decompressobj(31).decompress(cut)) > 540, "the cut must leave the header whole"
    path.write_bytes(cut)
    with pytest.raises(InputError, match=_named(path, r"truncated or corrupt gzip data \(.+\)$")):
        check_nifti_complete(path)


def test_a_gzip_nifti_cut_inside_its_header_is_refused(tmp_path: Path) -> None:
    path = _itk_nifti(tmp_path / "ct.nii.gz")
    cut = path.read_bytes()[:30]
    assert len(zlib.decompressobj(31).decompress(cut)) < 348, "the cut must fall inside the header"
    path.write_bytes(cut)
    with pytest.raises(InputError, match=_named(path, r"truncated or corrupt file \(.+\)$")):
        check_nifti_complete(path)


@pytest.mark.parametrize("missing", [4, 8], ids=["length field", "whole trailer"])
def test_a_gzip_nifti_that_only_lacks_its_trailer_is_refused(tmp_path: Path, missing: int) -> None:
    """All voxels inflate, but without its CRC and length the file cannot be shown to be whole."""
    path = _itk_nifti(tmp_path / "ct.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    cut = path.read_bytes()[:-missing]
    inflater = zlib.decompressobj(31)
    assert inflater.decompress(cut) == raw and not inflater.eof, "only the trailer may be missing"
    path.write_bytes(cut)
    with pytest.raises(InputError, match=_named(path, r"truncated or corrupt gzip data")):
        check_nifti_complete(path)


def test_a_multi_member_gzip_that_lost_its_last_bytes_is_refused(tmp_path: Path) -> None:
    """Each member is a valid gzip, so only the inflated length shows that voxels are missing."""
    raw = _itk_nifti_bytes(tmp_path)
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:-100]))
    with pytest.raises(InputError, match=_named(path, _short_by(len(raw), 100))):
        check_nifti_complete(path)


@pytest.mark.parametrize("compress", [False, True], ids=["nii", "nii.gz"])
@pytest.mark.parametrize("length", [0, 200, 347])
def test_a_file_shorter_than_the_nifti_header_is_refused(tmp_path: Path, compress: bool, length: int) -> None:
    raw = _itk_nifti_bytes(tmp_path)[:length]
    path = tmp_path / ("ct.nii.gz" if compress else "ct.nii")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(InputError, match=_named(path, rf"truncated NIfTI file \({length} header bytes\)$")):
        check_nifti_complete(path)


def test_voxel_data_is_counted_from_the_headers_vox_offset(tmp_path: Path) -> None:
    """A header with extensions puts the voxels further in; the file must hold them from there."""
    raw = bytearray(_itk_nifti_bytes(tmp_path))
    struct.pack_into("<f", raw, 108, 352.0 + 16)  # claims 16 bytes of extensions that are not there
    path = tmp_path / "ct.nii"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=_named(path, _short_by(len(raw) + 16, 16))):
        check_nifti_complete(path)


def test_a_nifti2_file_cut_inside_its_header_is_reported_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii"
    path.write_bytes(hand_made_nifti(VOXELS, "<", version=2)[:400])
    with pytest.raises(InputError, match=_named(path, "truncated")):
        check_nifti_complete(path)


# files that are not NIfTI at all, or whose header is corrupt


@pytest.mark.parametrize("compress", [False, True], ids=["nii", "nii.gz"])
def test_a_file_that_is_not_nifti_is_refused(tmp_path: Path, compress: bool) -> None:
    text = b"patient,liver\n" * 50
    path = tmp_path / ("ct.nii.gz" if compress else "ct.nii")
    path.write_bytes(gzip.compress(text) if compress else text)
    with pytest.raises(InputError, match=_named(path, r"not a NIfTI file")):
        check_nifti_complete(path)


def test_a_file_with_the_gzip_magic_but_no_gzip_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(b"\x1f\x8b" + b"\xff" * 600)
    with pytest.raises(InputError, match=_named(path, r"truncated or corrupt file \(.+\)$")):
        check_nifti_complete(path)


@pytest.mark.parametrize(
    ("offset", "value", "reported"),
    [(40, 0, r"dim\[0\]=0, bitpix=16"), (40, 8, r"dim\[0\]=8, bitpix=16"), (72, 12, r"dim\[0\]=3, bitpix=12")],
    ids=["no dimensions", "eight dimensions", "bitpix not whole bytes"],
)
def test_a_header_with_an_impossible_dimension_count_or_bitpix_is_refused(
    tmp_path: Path, offset: int, value: int, reported: str
) -> None:
    raw = bytearray(_itk_nifti_bytes(tmp_path))
    struct.pack_into("<h", raw, offset, value)
    path = tmp_path / "ct.nii"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=_named(path, rf"corrupt NIfTI header \({reported}\)$")):
        check_nifti_complete(path)


def test_a_gzip_nifti_with_bytes_changed_inside_its_deflate_stream_is_refused(tmp_path: Path) -> None:
    """The trailer (CRC and length) is intact; the data it describes is not."""
    path = _itk_nifti(tmp_path / "changed.nii.gz")
    content = bytearray(path.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 4] = bytes(255 - b for b in content[middle : middle + 4])
    path.write_bytes(bytes(content))
    with pytest.raises(InputError, match=_named(path, r"truncated or corrupt gzip data")):
        check_nifti_complete(path)


def test_a_gzip_nifti_whose_crc_is_wrong_is_refused(tmp_path: Path) -> None:
    """Data and length intact, CRC-32 in the trailer wrong: what a changed but still inflatable stream gives."""
    path = _itk_nifti(tmp_path / "crc.nii.gz")
    content = bytearray(path.read_bytes())
    (crc,) = struct.unpack_from("<I", content, len(content) - 8)
    struct.pack_into("<I", content, len(content) - 8, crc ^ 1)
    path.write_bytes(bytes(content))
    with pytest.raises(InputError, match=_named(path, r"truncated or corrupt gzip data \(CRC check failed")):
        check_nifti_complete(path)


@pytest.mark.parametrize(
    ("offset", "value", "problem"),
    [
        (80, 0.0, r"voxel spacing \(NIfTI pixdim\) \(0\.0, 1\.0, 1\.0\) is not positive and finite"),
        (84, -2.0, r"voxel spacing \(NIfTI pixdim\) \(1\.0, -2\.0, 1\.0\) is not positive and finite"),
        (112, float("nan"), r"intensity scaling \(scl_slope nan, scl_inter 0\.0\) is not finite"),
        (112, 1e30, r"implausible intensity scaling \(scl_slope 1e\+30, scl_inter 0\)"),
        (116, float("inf"), r"intensity scaling \(scl_slope 1\.0, scl_inter inf\) is not finite"),
    ],
)
@pytest.mark.parametrize("order", ["<", ">"])
def test_header_values_itk_would_silently_change_are_refused(
    tmp_path: Path, order: str, offset: int, value: float, problem: str
) -> None:
    """ITK reads a pixdim of 0 as 1 mm, ignores a NaN slope and clips what a slope of 1e30 makes of the CT."""
    content = bytearray(hand_made_nifti(VOXELS, order, version=1))
    struct.pack_into(order + "f", content, offset, value)
    path = tmp_path / "odd.nii"
    path.write_bytes(bytes(content))
    with pytest.raises(InputError, match=_named(path, problem)):
        check_nifti_complete(path)


@pytest.mark.parametrize("name", ["float.nii", "float.nii.gz"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_float_nifti_voxels_that_are_not_finite_are_refused(tmp_path: Path, name: str, bad: float) -> None:
    """ITK's NIfTI reader turns them into 0 without a word (the MetaImage reader keeps them, where read_ct refuses)."""
    for dtype in (np.float32, np.float64):
        values = VOXELS.astype(dtype)
        values[3, 7, 11] = bad
        path = tmp_path / name
        sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
        with pytest.raises(InputError, match=_named(path, r"image contains 1 NaN or infinite values$")):
            check_nifti_complete(path)
        sitk.WriteImage(sitk.GetImageFromArray(VOXELS.astype(dtype)), str(path))
        check_nifti_complete(path)  # the same without it passes


# the voxels a reader decoded: a file they match is not decompressed again


def _count_decompressions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files whose whole stream check_nifti_complete decompresses from now on."""
    import efficientscn.imaging.nifti_check as nifti_check

    decompressed: list[Path] = []
    whole_stream = nifti_check._chunks

    def counted(path: Path, compressed: bool, lengths: list[int]):  # type: ignore[no-untyped-def]
        decompressed.append(path)
        return whole_stream(path, compressed, lengths)

    monkeypatch.setattr(nifti_check, "_chunks", counted)
    return decompressed


def test_decoded_voxels_that_match_the_gzip_trailer_spare_the_second_decompression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _itk_nifti(tmp_path / "ct.nii.gz")
    image = sitk.ReadImage(str(path))  # outlives the view of its voxels
    decompressed = _count_decompressions(monkeypatch)
    check_nifti_complete(path, decoded=sitk.GetArrayViewFromImage(image))
    assert decompressed == []
    check_nifti_complete(path)
    assert decompressed == [path]


@pytest.mark.parametrize(
    "decoded",
    [
        lambda voxels: np.where(np.arange(voxels.size).reshape(voxels.shape) == 100, voxels + 1, voxels),
        lambda voxels: voxels[:-1],
        lambda voxels: voxels.astype(np.int32),
        lambda voxels: np.asfortranarray(voxels),
    ],
    ids=["one voxel differs", "one slice short", "another type", "another memory order"],
)
def test_decoded_voxels_that_do_not_match_send_the_file_to_the_whole_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoded: object
) -> None:
    """Nothing is concluded from voxels that are not the file's stream: the file is decompressed and judged alone."""
    path = _itk_nifti(tmp_path / "ct.nii.gz")
    decompressed = _count_decompressions(monkeypatch)
    check_nifti_complete(path, decoded=decoded(VOXELS))  # type: ignore[operator]
    assert decompressed == [path]


def test_a_multi_member_gzip_with_its_decoded_voxels_is_checked_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last member's trailer describes that member only: it cannot vouch for the file."""
    raw = _itk_nifti_bytes(tmp_path)
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    decompressed = _count_decompressions(monkeypatch)
    check_nifti_complete(path, decoded=VOXELS)
    assert decompressed == [path]


@pytest.mark.parametrize("damage", ["cut in half", "bytes changed", "crc wrong", "trailer missing"])
def test_read_image_refuses_a_damaged_gzip_nifti_whatever_itk_decoded(tmp_path: Path, damage: str) -> None:
    """ITK decodes what it can (padding with 0) without a word; the check of what it decoded refuses the file.

    The CT is large enough that every damage lies in its voxels, past what ITK reads to recognise the file."""
    from efficientscn.imaging.read import read_image

    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.tile(VOXELS, (5, 4, 4))), str(path))
    content = bytearray(path.read_bytes())
    if damage == "cut in half":
        content = content[: len(content) // 2]
    elif damage == "bytes changed":
        middle = len(content) // 2
        content[middle : middle + 4] = bytes(255 - b for b in content[middle : middle + 4])
    elif damage == "crc wrong":
        content[-8] ^= 1
    else:
        content = content[:-8]
    path.write_bytes(bytes(content))
    with pytest.raises(InputError, match=_named(path, r"truncated or corrupt gzip data")):
        read_image(path)
