"""NumPy views of a SimpleITK image's voxels that keep the image alive, read-only or, for an image made to be filled
in place, writable.

`sitk.GetArrayViewFromImage` gives a read-only view that does not hold its image (such a view outlived a temporary
image as freed memory). Reading a NIfTI file fills a new image through a writable view instead of building an array
and copying it into an image, which would hold the voxels twice at the peak.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


class _ImageVoxels:
    """The voxels of a SimpleITK image for NumPy (`__array_interface__`), holding the image: a NumPy view of it then
    keeps the image alive."""

    def __init__(self, image: sitk.Image, *, writable: bool) -> None:
        self.image = image
        interface = dict(sitk.GetArrayViewFromImage(image).__array_interface__)
        address, _ = interface["data"]
        interface["data"] = (address, not writable)  # (pointer, read-only flag)
        self.__array_interface__ = interface


def voxels_of(image: sitk.Image) -> np.ndarray:
    """A read-only view of `image`'s voxels (z, y, x), without a copy, that keeps the image alive."""
    return np.asarray(_ImageVoxels(image, writable=False))


def blank_image_and_voxels(size_xyz: tuple[int, ...], pixel_id: int) -> tuple[sitk.Image, np.ndarray]:
    """A new zero-filled image of `size_xyz` voxels of `pixel_id` and a writable view of its voxels (z, y, x).

    Only a new image may be written through a view: SimpleITK shares the buffer of an image copied from another
    until one of them is changed through SimpleITK, which writing through a view does not tell it.
    """
    image = sitk.Image([int(s) for s in size_xyz], pixel_id)
    return image, np.asarray(_ImageVoxels(image, writable=True))
