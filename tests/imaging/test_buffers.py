"""NumPy views of SimpleITK images: read-only or writable, keeping their image alive."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.buffers import blank_image_and_voxels, voxels_of


def test_writing_through_a_blank_images_view_sets_its_voxels() -> None:
    image, voxels = blank_image_and_voxels((4, 3, 2), sitk.sitkUInt8)
    assert voxels.shape == (2, 3, 4) and voxels.dtype == np.uint8 and not voxels.any()
    voxels[1, 2, 3] = 7
    np.flip(voxels, axis=2)[0, 0, 0] = 5  # through a view of the view
    assert image.GetPixel(3, 2, 1) == 7
    assert image.GetPixel(3, 0, 0) == 5
    assert int(sitk.GetArrayViewFromImage(image).sum()) == 12


def test_the_view_of_an_image_is_read_only_and_keeps_the_image_alive() -> None:
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    voxels = voxels_of(image)
    with pytest.raises(ValueError, match="read-only"):
        voxels[0, 0, 0] = 1
    del image
    gc.collect()
    sitk.Image([256, 256, 64], sitk.sitkInt16)  # memory a freed buffer would be reused for
    assert np.array_equal(voxels, np.arange(24).reshape(2, 3, 4))
