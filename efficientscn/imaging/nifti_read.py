"""Reading a NIfTI file's voxels straight into the image: what ITK's reader gives, at half its peak memory.

ITK's NIfTI reader decodes the voxels into a buffer of its own and then copies them into the image, so a 512 x 512
x 1208 int16 CT (633 MB) is held twice while it is read, the peak of segmenting it. Here they are decompressed into
the image's own buffer, 16 MB at a time, with the geometry, pixel type and metadata of ITK's reading of the header;
the gzip stream's CRC-32 and length are checked on the way, so the file is known whole without a second pass. Where
ITK would change the stored values (an intensity scaling, a datatype it reads as another pixel type), `read_image`
reads the file through ITK as before.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.imaging.buffers import blank_image_and_voxels
from efficientscn.imaging.nifti_check import (
    GZIP_ERRORS,
    NiftiLayout,
    corrupt_gzip,
    non_finite_voxels,
    open_nifti_data,
    read_nifti_layout,
    truncated_nifti,
)

PIXEL_IDS = {
    2: sitk.sitkUInt8,
    4: sitk.sitkInt16,
    8: sitk.sitkInt32,
    16: sitk.sitkFloat32,
    64: sitk.sitkFloat64,
    256: sitk.sitkInt8,
    512: sitk.sitkUInt16,
    768: sitk.sitkUInt32,
    1024: sitk.sitkInt64,
    1280: sitk.sitkUInt64,
}
"""The SimpleITK pixel type of each real, single-component NIfTI datatype, as ITK reads it when unscaled."""
CHUNK_BYTES = 16 * 2**20
"""Decompressed bytes read at a time: the only memory beside the image."""
_NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"


def read_nifti_voxels(path: Path, header: sitk.ImageFileReader) -> sitk.Image | None:
    """The image ITK's `header` (a reader of the NIfTI file at `path`, its header read) would give, its voxels
    decoded into the image's buffer; None where ITK would change the stored values (then read it through ITK).

    InputError naming `path` if the voxel data is cut short or its gzip stream is corrupt, or float voxels are NaN
    or infinite (which ITK reads as 0).
    """
    compressed, layout = read_nifti_layout(path)
    size = tuple(int(s) for s in header.GetSize())
    pixel_id = PIXEL_IDS.get(layout.datatype)
    if pixel_id is None or pixel_id != header.GetPixelID() or not _unscaled(layout):
        return None
    if math.prod(size) * _item_bytes(pixel_id) != layout.data_bytes:  # ITK reads another shape (more dimensions)
        return None
    image, voxels = blank_image_and_voxels(size, pixel_id)
    _decode_into(path, compressed, layout, memoryview(voxels).cast("B"))
    if layout.byte_order != _NATIVE_ORDER:
        voxels.byteswap(inplace=True)
    if voxels.dtype.kind == "f" and (non_finite := voxels.size - int(np.count_nonzero(np.isfinite(voxels)))):
        raise non_finite_voxels(path, non_finite)
    image.SetSpacing(header.GetSpacing())
    image.SetOrigin(header.GetOrigin())
    image.SetDirection(header.GetDirection())
    for key in header.GetMetaDataKeys():
        image.SetMetaData(key, header.GetMetaData(key))
    return image


def _unscaled(layout: NiftiLayout) -> bool:
    """Whether the header's intensity scaling leaves the stored values as they are (a slope of 0 means none)."""
    slope, intercept = layout.scaling
    return slope in (0.0, 1.0) and intercept == 0.0


def _item_bytes(pixel_id: int) -> int:
    """The bytes of one voxel of a SimpleITK pixel type."""
    return sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], pixel_id)).itemsize


def _decode_into(path: Path, compressed: bool, layout: NiftiLayout, target: memoryview) -> None:
    """Fill `target` with the voxel bytes of the file, read to its end when compressed (the gzip reader checks each
    member's CRC-32 and length there); InputError if the data is cut short or the stream corrupt."""
    filled = 0
    try:
        with open_nifti_data(path, compressed) as stream:
            stream.seek(layout.offset)
            while filled < len(target) and (count := stream.readinto(target[filled : filled + CHUNK_BYTES])):
                filled += count
            reached = stream.tell() if compressed else path.stat().st_size  # a seek may pass a plain file's end
            while compressed and stream.read(CHUNK_BYTES):
                pass
    except GZIP_ERRORS as error:
        raise corrupt_gzip(path, error) from error
    if filled < len(target):
        raise truncated_nifti(path, reached, layout.offset + layout.data_bytes)
