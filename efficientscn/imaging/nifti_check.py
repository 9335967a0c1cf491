"""Detect NIfTI files whose voxel data is cut short or corrupt, which ITK's NIfTI reader silently accepts.

A truncated download or an interrupted copy of a `.nii.gz` otherwise reads as a CT whose lower slices are 0 HU,
and a `.nii.gz` with bytes changed inside its deflate stream reads as a CT with garbage slabs. The header gives
the length the voxel data must have; a compressed file is decompressed whole, which checks every gzip member's
CRC-32 and length (about 0.3 s for a 512 x 512 x 200 int16 CT). An uncompressed file is checked for its length
only: changed bytes inside it cannot be detected.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from efficientscn.errors import InputError

_NIFTI1_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540


def _expected_nifti_bytes(header: bytes, path: Path) -> int:
    """Offset of the voxel data plus its size, from a NIfTI-1 or NIfTI-2 header (either byte order)."""
    for order in "<>":
        (sizeof_hdr,) = struct.unpack_from(order + "i", header, 0)
        if sizeof_hdr in (_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES) and len(header) < sizeof_hdr:
            raise InputError(f"{path}: truncated NIfTI file ({len(header)} of its {sizeof_hdr} header bytes)")
        if sizeof_hdr == _NIFTI1_HEADER_BYTES:
            dims = struct.unpack_from(order + "8h", header, 40)
            (bitpix,) = struct.unpack_from(order + "h", header, 72)
            (vox_offset,) = struct.unpack_from(order + "f", header, 108)
            offset = max(int(vox_offset), _NIFTI1_HEADER_BYTES)
            break
        if sizeof_hdr == _NIFTI2_HEADER_BYTES:
            (bitpix,) = struct.unpack_from(order + "h", header, 14)
            dims = struct.unpack_from(order + "8q", header, 16)
            (vox_offset,) = struct.unpack_from(order + "q", header, 168)
            offset = max(int(vox_offset), _NIFTI2_HEADER_BYTES)
            break
    else:
        raise InputError(f"{path}: not a NIfTI file (header size field is neither 348 nor 540)")
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        raise InputError(f"{path}: corrupt NIfTI header (dim[0]={ndim}, bitpix={bitpix})")
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
    return offset + voxels * (bitpix // 8)


def _decompressed_length(path: Path) -> int:
    """Length of a gzip file's whole decompressed stream; InputError if it ends early or fails its CRC check."""
    length = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                length += len(chunk)
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(f"{path}: truncated or corrupt gzip data ({error})") from error
    return length


def check_nifti_complete(path: str | Path) -> None:
    """Raise `InputError` if a `.nii` or `.nii.gz` file holds less voxel data than its header promises, or if its
    gzip stream is truncated or fails its CRC check."""
    path = Path(path)
    with path.open("rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"  # gzip magic; some tools write plain NIfTI under .nii.gz
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                header = stream.read(_NIFTI2_HEADER_BYTES)
        else:
            with path.open("rb") as stream:
                header = stream.read(_NIFTI2_HEADER_BYTES)
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(f"{path}: truncated or corrupt file ({error})") from error
    if len(header) < _NIFTI1_HEADER_BYTES:
        raise InputError(f"{path}: truncated NIfTI file ({len(header)} header bytes)")
    expected = _expected_nifti_bytes(header, path)
    actual = _decompressed_length(path) if compressed else path.stat().st_size
    if actual < expected:
        raise InputError(
            f"{path}: truncated NIfTI file: {actual} bytes (header and voxels) where the header needs {expected}"
        )
