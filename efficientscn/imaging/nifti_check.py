"""Detect NIfTI files whose voxel data is cut short or corrupt, which ITK's NIfTI reader silently accepts.

A truncated download or an interrupted copy of a `.nii.gz` otherwise reads as a CT whose lower slices are 0 HU,
and a `.nii.gz` with bytes changed inside its deflate stream reads as a CT with garbage slabs. The header gives
the length the voxel data must have; a compressed file is decompressed whole, which checks every gzip member's
CRC-32 and length (about 0.2 s for a 512 x 512 x 200 int16 CT), unless the voxels a reader has just decoded from it
are at hand: when the header's bytes and those voxels match the gzip trailer's CRC-32 and length, the file was
whole and intact, and it is not decompressed a second time (0.02 s). An uncompressed file is checked for its length
only: changed bytes inside it cannot be detected.

`read_image` decodes most NIfTI files itself (`nifti_read`), with the same checks on the way; this module checks
what ITK reads (a scaled file) and what it writes (`write.write_image_atomic`).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from zlib_ng import gzip_ng, zlib_ng

from efficientscn.errors import InputError

_NIFTI1_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540


_FLOAT_DATATYPES = {16: "f4", 64: "f8"}
"""NIfTI datatype codes of real floating-point voxels, whose NaN and infinite values ITK reads as 0 without a word."""
MAX_SCALE = 1e6
"""Largest magnitude accepted for the intensity scaling (scl_slope, scl_inter); a CT's are about 1 and -1024."""


@dataclass(frozen=True)
class NiftiLayout:
    """What a NIfTI header says about the file's voxel data and geometry."""

    offset: int
    data_bytes: int
    datatype: int
    """The NIfTI datatype code of the voxels (4: int16, 16: float32, ...)."""
    byte_order: str
    """"<" (little-endian) or ">" (big-endian), as NumPy writes it."""
    spacing: tuple[float, ...]
    scaling: tuple[float, float]
    form_codes: tuple[int, int]
    """qform_code and sform_code: both 0 means no orientation, nor a spacing that anything stated."""

    @property
    def float_dtype(self) -> str | None:
        """NumPy dtype of floating-point voxels (with byte order), None for integer voxels."""
        kind = _FLOAT_DATATYPES.get(self.datatype)
        return None if kind is None else self.byte_order + kind


def _nifti_layout(header: bytes, path: Path) -> NiftiLayout:
    """The voxel data's place, size and type, the spacing and scaling, from a NIfTI-1 or NIfTI-2 header (either
    byte order)."""
    for order in "<>":
        (sizeof_hdr,) = struct.unpack_from(order + "i", header, 0)
        if sizeof_hdr in (_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES) and len(header) < sizeof_hdr:
            raise InputError(f"{path}: truncated NIfTI file ({len(header)} of its {sizeof_hdr} header bytes)")
        if sizeof_hdr == _NIFTI1_HEADER_BYTES:
            dims = struct.unpack_from(order + "8h", header, 40)
            datatype, bitpix = struct.unpack_from(order + "2h", header, 70)
            pixdim = struct.unpack_from(order + "8f", header, 76)
            (vox_offset,) = struct.unpack_from(order + "f", header, 108)
            scaling = struct.unpack_from(order + "2f", header, 112)
            form_codes = struct.unpack_from(order + "2h", header, 252)
            offset = max(int(vox_offset), _NIFTI1_HEADER_BYTES)
            break
        if sizeof_hdr == _NIFTI2_HEADER_BYTES:
            datatype, bitpix = struct.unpack_from(order + "2h", header, 12)
            dims = struct.unpack_from(order + "8q", header, 16)
            pixdim = struct.unpack_from(order + "8d", header, 104)
            (vox_offset,) = struct.unpack_from(order + "q", header, 168)
            scaling = struct.unpack_from(order + "2d", header, 176)
            form_codes = struct.unpack_from(order + "2i", header, 344)
            offset = max(int(vox_offset), _NIFTI2_HEADER_BYTES)
            break
    else:
        raise InputError(f"{path}: not a NIfTI file (header size field is neither 348 nor 540)")
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        raise InputError(f"{path}: corrupt NIfTI header (dim[0]={ndim}, bitpix={bitpix})")
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
    spacing = tuple(float(p) for p in pixdim[1 : min(ndim, 3) + 1])
    scale = (float(scaling[0]), float(scaling[1]))
    return NiftiLayout(
        offset,
        voxels * (bitpix // 8),
        int(datatype),
        order,
        spacing,
        scale,
        (int(form_codes[0]), int(form_codes[1])),
    )


def _check_header_values(layout: NiftiLayout, path: Path) -> None:
    """Refuse what ITK would silently turn into something else: a spacing of 0 (read as 1 mm), a negative or
    non-finite one, and a non-finite or absurd intensity scaling (a NaN slope is ignored)."""
    if not all(math.isfinite(s) and s > 0 for s in layout.spacing):
        raise InputError(f"{path}: voxel spacing (NIfTI pixdim) {layout.spacing} is not positive and finite")
    slope, intercept = layout.scaling
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise InputError(f"{path}: intensity scaling (scl_slope {slope}, scl_inter {intercept}) is not finite")
    if abs(intercept) > MAX_SCALE or (slope != 0 and not 1 / MAX_SCALE <= abs(slope) <= MAX_SCALE):
        raise InputError(f"{path}: implausible intensity scaling (scl_slope {slope:g}, scl_inter {intercept:g})")


def _count_non_finite(chunks: Iterator[bytes], dtype: str, skip: int) -> int:
    """Non-finite values among the floats that follow the first `skip` bytes of a stream of chunks."""
    count, pending, itemsize = 0, b"", np.dtype(dtype).itemsize
    for chunk in chunks:
        pending += chunk
        if skip:
            dropped = min(skip, len(pending))
            pending, skip = pending[dropped:], skip - dropped
        usable = len(pending) - len(pending) % itemsize
        count += int(np.count_nonzero(~np.isfinite(np.frombuffer(pending[:usable], dtype))))
        pending = pending[usable:]
    return count


GZIP_ERRORS = (EOFError, OSError, zlib.error, zlib_ng.error)
"""What the gzip readers raise for a stream that ends early, fails its CRC check or is not deflate data."""


def open_nifti_data(path: Path, compressed: bool) -> BinaryIO:
    """The file's (decompressed) bytes as a stream: gzip through zlib-ng, which inflates about twice as fast as
    zlib; its `GZIP_ERRORS` as Python's gzip module's, checking each member's CRC-32 and length."""
    return gzip_ng.open(path, "rb") if compressed else path.open("rb")


def corrupt_gzip(path: Path, error: Exception) -> InputError:
    """The refusal of a NIfTI file whose gzip stream raised `error` (one of `GZIP_ERRORS`)."""
    return InputError(f"{path}: truncated or corrupt gzip data ({error})")


def truncated_nifti(path: Path, actual: int, expected: int) -> InputError:
    """The refusal of a NIfTI file of `actual` bytes (header and voxels, decompressed) whose header needs
    `expected`."""
    return InputError(
        f"{path}: truncated NIfTI file: {actual} bytes (header and voxels) where the header needs {expected}"
    )


def non_finite_voxels(path: Path, count: int) -> InputError:
    """The refusal of a NIfTI file whose float voxels hold `count` NaN or infinite values."""
    return InputError(f"{path}: image contains {count} NaN or infinite values")


def _chunks(path: Path, compressed: bool, lengths: list[int]) -> Iterator[bytes]:
    """The file's (decompressed) bytes in chunks, their count added to `lengths`; InputError if a gzip stream ends
    early or fails its CRC check."""
    try:
        with open_nifti_data(path, compressed) as stream:
            while chunk := stream.read(1 << 24):
                lengths.append(len(chunk))
                yield chunk
    except GZIP_ERRORS as error:
        raise corrupt_gzip(path, error) from error


def read_nifti_layout(path: Path) -> tuple[bool, NiftiLayout]:
    """Whether the file is gzip-compressed, and what its NIfTI header says; InputError if it cannot be read."""
    with path.open("rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"  # gzip magic; some tools write plain NIfTI under .nii.gz
    try:  # Python's gzip inflates no further than asked: damage beyond the header is reported by the data's readers
        with gzip.open(path, "rb") if compressed else path.open("rb") as stream:
            header = stream.read(_NIFTI2_HEADER_BYTES)
    except GZIP_ERRORS as error:
        raise InputError(f"{path}: truncated or corrupt file ({error})") from error
    if len(header) < _NIFTI1_HEADER_BYTES:
        raise InputError(f"{path}: truncated NIfTI file ({len(header)} header bytes)")
    return compressed, _nifti_layout(header, path)


def nifti_states_orientation(path: str | Path) -> bool:
    """Whether a NIfTI file's header has a qform or an sform (without either, its spacing is a reader's guess)."""
    return any(read_nifti_layout(Path(path))[1].form_codes)


def check_nifti_header(path: str | Path) -> None:
    """Raise `InputError` if a NIfTI file's header cannot be read or its spacing or intensity scaling is unusable
    (which ITK would silently replace): the part of `check_nifti_complete` that needs no voxel data."""
    path = Path(path)
    _check_header_values(read_nifti_layout(path)[1], path)


def _matches_gzip_trailer(path: Path, layout: NiftiLayout, decoded: np.ndarray) -> bool:
    """Whether the file's header bytes followed by `decoded` are its whole gzip stream, as its (single member's)
    trailer states it: CRC-32 and length. False whenever that cannot be shown (then the file is decompressed)."""
    if decoded.nbytes != layout.data_bytes or not decoded.flags.c_contiguous:
        return False
    try:
        with open_nifti_data(path, compressed=True) as stream:
            head = stream.read(layout.offset)
        with path.open("rb") as raw:
            raw.seek(-8, os.SEEK_END)
            crc, length = struct.unpack("<II", raw.read(8))
    except GZIP_ERRORS:
        return False
    if len(head) != layout.offset or (len(head) + decoded.nbytes) % (1 << 32) != length:
        return False
    return zlib.crc32(memoryview(decoded).cast("B"), zlib.crc32(head)) == crc


def check_nifti_complete(path: str | Path, *, decoded: np.ndarray | None = None) -> None:
    """Raise `InputError` if a `.nii` or `.nii.gz` file holds less voxel data than its header promises, if its gzip
    stream is truncated or fails its CRC check, if its spacing or intensity scaling is unusable, or if its float
    voxels hold NaN or infinity (all of which ITK reads without a word).

    `decoded`: the integer voxels a reader has just decoded from the file, as stored (C order, x fastest). A
    compressed file whose header and these voxels match its gzip trailer is then not decompressed again.
    """
    path = Path(path)
    compressed, layout = read_nifti_layout(path)
    _check_header_values(layout, path)
    if (
        compressed
        and decoded is not None
        and layout.float_dtype is None
        and _matches_gzip_trailer(path, layout, decoded)
    ):
        return
    expected = layout.offset + layout.data_bytes
    if compressed or layout.float_dtype is not None:  # read whole: the CRC check, the float values
        lengths: list[int] = []
        chunks = _chunks(path, compressed, lengths)
        if layout.float_dtype is None:
            for _ in chunks:
                pass
        elif non_finite := _count_non_finite(chunks, layout.float_dtype, layout.offset):
            raise non_finite_voxels(path, non_finite)  # ITK would read 0
        actual = sum(lengths)
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise truncated_nifti(path, actual, expected)
