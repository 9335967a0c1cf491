"""Writing images atomically: a path holds its old content or the complete new file, never a part."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from efficientscn.atomic import atomic_output

WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
"""Single-file formats, the only ones that can be written atomically by one rename."""


def write_image_atomic(
    image: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write an image so that `path` either keeps its old content or holds the complete new file, never a part.

    Single-file formats only (see WRITABLE_SUFFIXES). An existing `path` raises FileExistsError unless
    `overwrite` is set. Returns the path written.
    """
    path = Path(path)
    suffix = next((s for s in WRITABLE_SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{path}: cannot write atomically; use one of {', '.join(WRITABLE_SUFFIXES)}")
    with atomic_output(path, suffix=path.name[-len(suffix) :], overwrite=overwrite) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
    return path


def write_label(label: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a uint8 label map atomically and compressed (see `write_image_atomic`)."""
    if label.GetPixelID() != sitk.sitkUInt8:
        raise TypeError(f"{path}: label maps are written as uint8, got {label.GetPixelIDTypeAsString()}")
    return write_image_atomic(label, path, overwrite=overwrite, compress=True)
