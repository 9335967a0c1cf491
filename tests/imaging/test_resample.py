"""Resampling: the one helper onto a grid, and back onto a CT's grid through a sample transform's inverse."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.augment import (
    SpatialAugmentConfig,
    resample,
    sample_transform,
)
from efficientscn.imaging.geometry import Grid
from efficientscn.imaging.resample import AIR_HU, resample_onto, resample_to_input

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_resample_to_input_inverts_the_affine(ct_pair) -> None:
    image, label = ct_pair
    size, spacing = (64, 56, 64), (6.0, 6.0, 6.0)
    original = sitk.GetArrayFromImage(label)
    # centring only, same size and spacing, RAS input: there is a flip of x and y, and nearest back is exact
    plain = sample_transform(label, original.shape[::-1], label.GetSpacing())
    there = resample(label, plain, original.shape[::-1], label.GetSpacing(), "nearest", 0)
    assert not np.array_equal(there, original)  # the output grid is LPS, so the array is flipped
    np.testing.assert_array_equal(resample_to_input(there, plain, label.GetSpacing(), label, "nearest"), original)
    # a random rotation and scale, one-hot channels-last, linear: argmax back on the input grid matches the label
    config = SpatialAugmentConfig(translation_mm=0, deformation_mm=0)
    transform = sample_transform(image, size, spacing, config, np.random.default_rng(2))
    onehot = np.eye(5, dtype=np.float32)[resample(label, transform, size, spacing, "nearest", 0, dense_field=False)]
    back = resample_to_input(onehot, transform, spacing, image, "linear")
    assert back.shape == (*original.shape, 5) and back.dtype == np.float32
    organs = original > 0
    assert np.mean(back.argmax(axis=-1)[organs] == original[organs]) > 0.85  # 6 mm there, 3 mm back


def test_resample_to_input_refuses_a_deformation(ct_pair) -> None:
    image, _ = ct_pair
    transform = sample_transform(image, (16, 16, 16), (8.0,) * 3, SpatialAugmentConfig(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="no inverse"):
        resample_to_input(np.zeros((16, 16, 16), np.float32), transform, (8.0,) * 3, image)


def test_resample_onto_keeps_the_pixel_type_fills_the_outside_and_names_its_interpolators() -> None:
    image = sitk.GetImageFromArray(np.arange(27, dtype=np.int16).reshape(3, 3, 3))
    wider = Grid(size=(5, 3, 3), spacing=(1.0, 1.0, 1.0), origin=(-1.0, 0.0, 0.0), direction=IDENTITY)
    out = resample_onto(image, wider, "nearest", AIR_HU)
    values = sitk.GetArrayFromImage(out)
    assert out.GetPixelID() == sitk.sitkInt16 and out.GetOrigin() == (-1.0, 0.0, 0.0)
    assert (values[..., 0] == AIR_HU).all() and (values[..., -1] == AIR_HU).all()
    np.testing.assert_array_equal(values[..., 1:4], sitk.GetArrayFromImage(image))
    halfway = Grid(size=(2, 1, 1), spacing=(1.0, 1.0, 1.0), origin=(0.5, 0.0, 0.0), direction=IDENTITY)
    linear = resample_onto(image, halfway, "linear", 0, pixel_type=sitk.sitkFloat32)
    np.testing.assert_allclose(sitk.GetArrayFromImage(linear).ravel(), [0.5, 1.5])
    with pytest.raises(ValueError, match="interpolator must be one of"):
        resample_onto(image, wider, sitk.sitkLinear, 0)  # type: ignore[arg-type]
