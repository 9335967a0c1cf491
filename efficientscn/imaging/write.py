"""Writing images atomically: a path holds its old content or the complete new file, never a part."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from efficientscn.atomic import atomic_output
from efficientscn.errors import InputError
from efficientscn.imaging.itk_path import itk_path
from efficientscn.imaging.names import image_suffix
from efficientscn.imaging.nifti_check import check_nifti_complete
from efficientscn.imaging.read import itk_reason, read_header

WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
"""Single-file formats, the only ones that can be written atomically by one rename."""


def write_image_atomic(
    image: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write an image so that `path` either keeps its old content or holds the complete new file, never a part.

    Single-file formats only (see WRITABLE_SUFFIXES). The file is read back (header, size, pixel type, and for
    NIfTI its whole data) before it takes its name: a write that failed, e.g. on a full disk, raises OSError and
    leaves nothing. An existing `path` raises FileExistsError unless `overwrite` is set. Returns the path written.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if suffix not in WRITABLE_SUFFIXES:
        raise ValueError(f"{path}: cannot write atomically; use one of {', '.join(WRITABLE_SUFFIXES)}")
    with atomic_output(path, suffix=path.name[-len(suffix) :], overwrite=overwrite) as temporary:
        try:
            with itk_path(temporary) as writable:  # a link with a plain name if ITK cannot take the real one
                sitk.WriteImage(image, str(writable), useCompression=compress)
        except RuntimeError as error:  # ITK's writers of MetaImage and NRRD do report a failed write
            reason = itk_reason(error).replace(str(temporary), "the file")
            raise OSError(f"{path}: not written (is the disk full?): {reason}") from error
        _check_written(image, temporary, path)
    return path


def _check_written(image: sitk.Image, written: Path, path: Path) -> None:
    """OSError naming `path` unless the file just written reads back whole with `image`'s size and pixel type.

    ITK's NIfTI writer reports no error when the disk fills up or a write fails: it leaves a truncated file.
    """
    try:
        if image_suffix(written) in (".nii", ".nii.gz"):
            check_nifti_complete(written)  # length, and the whole gzip stream with its CRC
        header = read_header(written)
        if header.grid.size != image.GetSize() or header.pixel_id != image.GetPixelID():
            raise InputError(f"reads back as {header.grid.size} {header.pixel_type}")
    except InputError as error:
        reason = str(error).replace(str(written), "the file written")
        raise OSError(f"{path}: not written (is the disk full?): it does not read back whole: {reason}") from error


def write_label(label: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a uint8 label map atomically and compressed (see `write_image_atomic`)."""
    if label.GetPixelID() != sitk.sitkUInt8:
        raise TypeError(f"{path}: label maps are written as uint8, got {label.GetPixelIDTypeAsString()}")
    return write_image_atomic(label, path, overwrite=overwrite, compress=True)
