"""Localization samples: sizes by the spec's valid-size rule, 6 mm grid, binary labels, intensities, mapping back."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.data.layout import FlareDataset
from efficientscn.data.localization import (
    LocalizationDataConfig,
    LocalizationSamples,
    any_organ_one_hot,
    localization_size,
)
from efficientscn.imaging.resample import resample_to_input
from efficientscn.imaging.write import write_image_atomic

from helpers import impulse_ct, impulse_response_sigma_mm


def _blank(size_xyz: tuple[int, int, int], spacing_xyz: tuple[float, ...], direction: tuple[float, ...] | None = None):
    """An int16 CT of zeros of a given size and spacing: only its geometry matters (no array is made)."""
    image = sitk.Image([int(s) for s in size_xyz], sitk.sitkInt16)
    image.SetSpacing(spacing_xyz)
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    return image


def test_localization_size_is_the_smallest_valid_size_strictly_above_the_extent():
    config = LocalizationDataConfig()
    # 512 x 0.8 mm = 409.6 mm -> 69 voxels -> 80; 150 x 2.5 mm = 375 mm -> 63 -> 64 in z
    assert localization_size(_blank((512, 512, 150), (0.8, 0.8, 2.5)), config) == (80, 80, 64)
    # an exact fit moves on: 192 mm = 32 voxels -> 48 (docs/fidelity.md #1)
    assert localization_size(_blank((64, 64, 64), (3.0, 3.0, 3.0)), config) == (48, 48, 48)
    # larger than the largest valid size: the largest
    assert localization_size(_blank((700, 700, 1000), (1.0, 1.0, 2.0)), config) == (80, 80, 256)


def test_localization_size_follows_the_physical_axes_of_a_permuted_image():
    # index x (300 mm) runs along physical z, index z (200 mm) along physical x
    permuted = _blank((100, 50, 40), (3.0, 4.0, 5.0), direction=(0, 0, 1, 0, 1, 0, 1, 0, 0))
    assert localization_size(permuted, LocalizationDataConfig()) == (48, 48, 64)
    assert localization_size(_blank((100, 50, 40), (3.0, 4.0, 5.0)), LocalizationDataConfig()) == (64, 48, 48)


def test_training_size_comes_from_the_subsampled_ct_as_the_original(tmp_path):
    # 63 voxels of 3 mm: 189 mm -> 32 voxels at 6 mm -> 48 for testing; subsampled by 2 for training, 31 voxels of
    # 6 mm: 186 mm -> 31 -> 32, as the original sizes the grid from its datasource image after the Shrink
    dataset = FlareDataset(tmp_path)
    ct = _blank((63, 63, 63), (3.0, 3.0, 3.0))
    write_image_atomic(ct, dataset.training_image("train_000", small=True))
    write_image_atomic(sitk.Cast(ct, sitk.sitkUInt8), dataset.training_mask("train_000", small=True))
    samples = LocalizationSamples(dataset.root, LocalizationDataConfig(smoothing_sigma_mm=0.0))
    assert samples.load("train_000", training=False).size_xyz == (48, 48, 48)
    training = samples.load("train_000", training=True)
    assert training.image.GetSize() == (31, 31, 31)
    assert training.size_xyz == (32, 32, 32)


def test_any_organ_one_hot_marks_background_and_every_organ():
    labels = np.array([[[0, 1, 2, 3, 4]]], dtype=np.uint8)
    one_hot = any_organ_one_hot(labels)
    assert one_hot.dtype == np.uint8 and one_hot.shape == (1, 1, 5, 2)
    assert one_hot[0, 0, :, 1].tolist() == [0, 1, 1, 1, 1]
    assert np.all(one_hot.sum(axis=-1) == 1)


def test_test_sample_is_the_whole_ct_at_6mm_with_spec_intensities_and_maps_back_onto_the_ct(one_case_dataset):
    samples = LocalizationSamples(one_case_dataset, LocalizationDataConfig(smoothing_sigma_mm=0.0))
    loaded, transform, sample = samples.test_sample("train_000")
    # 122 x 101 x 112 voxels of 3 mm = 366 x 303 x 336 mm -> 61, 51, 56 voxels at 6 mm -> 64, 64, 64
    assert loaded.size_xyz == (64, 64, 64)
    assert sample["image"].shape == (64, 64, 64, 1) and sample["image"].dtype == np.float32
    assert sample["label"].shape == (64, 64, 64, 2)
    assert sample["image"].min() >= -1.0 and sample["image"].max() <= 1.0
    assert sample["image"][0, 0, 0, 0] == pytest.approx(-1024 / 2048)  # outside the CT: -1024 HU, scaled
    back = resample_to_input(sample["label"].astype(np.float32), transform, loaded.spacing_xyz, loaded.label)
    organ = np.argmax(back, axis=-1) > 0
    reference = sitk.GetArrayFromImage(loaded.label) > 0
    dice = 2 * np.logical_and(organ, reference).sum() / (organ.sum() + reference.sum())
    assert dice > 0.85  # 3 mm -> 6 mm -> 3 mm keeps the organs where they are


def test_training_samples_are_augmented_subsampled_and_keep_labels_binary(one_case_dataset):
    samples = LocalizationSamples(one_case_dataset)
    loaded = samples.load("train_000", training=True)
    assert loaded.image.GetSpacing() == pytest.approx((6.0, 6.0, 6.0))  # 3 mm shrunk by floor(6 / 3) = 2
    first, second = (samples.sample("train_000", np.random.default_rng(seed)) for seed in (1, 2))
    assert first["image"].shape == (64, 64, 64, 1)
    assert not np.array_equal(first["image"], second["image"])
    assert first["image"].min() >= -1.0 and first["image"].max() <= 1.0
    assert set(np.unique(first["label"])) == {0, 1}
    organ_fraction = first["label"][..., 1].mean()
    reference_fraction = (sitk.GetArrayFromImage(loaded.label) > 0).sum() * 27 / (64**3 * 216)
    assert organ_fraction == pytest.approx(reference_fraction, rel=0.5)  # augmentation scales only by 0.7..1.3^3


def test_cases_are_smoothed_with_a_gaussian_of_sigma_3mm_before_sampling(tmp_path):
    # a single bright voxel on a 1.5 x 1.5 x 1 mm grid spreads into a Gaussian of standard deviation 3 mm on every
    # axis (2, 2 and 3 voxels), its sum kept
    dataset = FlareDataset(tmp_path)
    ct = impulse_ct((1.5, 1.5, 1.0))
    write_image_atomic(ct, dataset.training_image("train_000", small=True))
    write_image_atomic(sitk.Cast(ct > 0, sitk.sitkUInt8), dataset.training_mask("train_000", small=True))
    loaded = LocalizationSamples(dataset.root).load("train_000", training=False)
    # SimpleITK's recursive (Deriche) Gaussian, which the original uses too, comes out 3 % narrow
    np.testing.assert_allclose(impulse_response_sigma_mm(loaded.image), 3.0, rtol=0.05)
    assert sitk.GetArrayViewFromImage(loaded.image).sum() == pytest.approx(10_000, rel=0.01)
