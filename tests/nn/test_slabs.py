"""Slab-wise inference of the networks' full-resolution levels: halos from the layers, slabs on the pooling grid,
the whole network's values, and a halo one slice short that breaks them.

Small networks here (the default suite); the paper's networks on every shared CT and at the SCN's largest input
are compared in tests/integration/test_slab_equality.py (slow).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientscn.model.savedmodel import LocalizationModule, SegmentationModule
from efficientscn.model.specs import SEGMENTATION_SPEC
from efficientscn.nn.config import LocalizationNetConfig, SCNConfig
from efficientscn.nn.localization import build_localization_net
from efficientscn.nn.slabs import (
    LevelHalos,
    Slabs,
    block_reach,
    joined,
    slabs_for_budget,
    slices_first,
    unet_level_by_slabs,
)
from efficientscn.nn.unet import UNet3D


def _unet(convs_per_block: int = 2, levels: int = 3) -> UNet3D:
    unet = UNet3D(levels=levels, filters=4, convs_per_block=convs_per_block, seed=3, dropout=0.5)
    unet.build((None, None, None, None, 1))
    return unet


def test_halos_come_from_the_layers() -> None:
    """Each 3x3x3 convolution reaches one slice to each side, the linear x2 upsampling one deeper slice."""
    assert LevelHalos.of(_unet(), 0) == LevelHalos(contracting=2, expanding=2, upsampling=1, factor=2)
    assert LevelHalos.of(_unet(convs_per_block=3), 1) == LevelHalos(contracting=3, expanding=3, upsampling=1, factor=2)
    dilated = keras.layers.Conv3D(2, 3, padding="same", dilation_rate=2)
    assert block_reach([dilated, keras.layers.LeakyReLU(), keras.layers.Dropout(0.1)]) == 2
    with pytest.raises(ValueError, match="no known reach"):
        block_reach([keras.layers.MaxPooling3D()])
    with pytest.raises(ValueError, match="'same' convolutions"):
        block_reach([keras.layers.Conv3D(2, 3, padding="valid")])


def _by_slabs(unet: UNet3D, x: tf.Tensor, depth: int, levels_by_slabs: int, halos: list | None = None) -> np.ndarray:
    (slabs,) = unet_level_by_slabs(
        unet,
        tf.cast(x, unet.compute_dtype),
        Slabs(tf.shape(x)[1], depth),
        lambda features: [slices_first(features)],
        [tf.as_dtype(unet.compute_dtype)],
        levels_by_slabs=levels_by_slabs,
        halos=halos,
    )
    return joined(slabs, unet.filters).numpy()


@pytest.mark.parametrize(("depth", "levels_by_slabs"), [(4, 1), (6, 1), (8, 2), (12, 2), (40, 2)])
def test_a_unet_by_slabs_gives_the_whole_networks_values(depth: int, levels_by_slabs: int) -> None:
    """Slabs of 4 to 12 slices of a 36-slice input, the last one shorter, one or two levels by slabs; and one slab
    deeper than the input: the whole network's output, bit for bit (every kept slice is computed by the same
    operation on the same neighbourhood)."""
    unet = _unet()
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, 36, 12, 16, 1)), tf.float32)
    whole = unet(x, training=False).numpy()
    np.testing.assert_array_equal(_by_slabs(unet, x, depth, levels_by_slabs), whole)


@pytest.mark.parametrize("short", ["contracting", "expanding", "upsampling"])
@pytest.mark.parametrize("level", [0, 1])
def test_a_halo_one_slice_short_breaks_equality(short: str, level: int) -> None:
    """Each halo of each slabbed level, one slice shorter than its layers reach, changes the result near the slab
    boundaries: the derived halos are the least that works."""
    unet = _unet()
    x = tf.constant(np.random.default_rng(1).uniform(-1, 1, (1, 32, 12, 16, 1)), tf.float32)
    whole = unet(x, training=False).numpy()
    halos = [LevelHalos.of(unet, current) for current in range(2)]
    halos[level] = dataclasses.replace(halos[level], **{short: getattr(halos[level], short) - 1})
    differences = np.abs(_by_slabs(unet, x, 8, 2, halos) - whole).max(axis=(0, 2, 3, 4))
    assert differences.max() > 1e-3


def test_the_slab_depth_follows_the_budget_on_the_pooling_grid() -> None:
    """Four feature maps of the U-Net's width per slice fit the budget; a multiple of the pooling grid, at least the
    expanding halos deep, at most the whole input (one slab)."""
    unet = _unet()  # 4 float32 filters: 4 maps x 4 filters x 4 bytes = 64 bytes per voxel of a slice
    x = tf.zeros((1, 40, 16, 16, 1))
    plane = 16 * 16 * 64
    assert int(slabs_for_budget(unet, x, 10 * plane, 4, 2).depth) == 8
    assert int(slabs_for_budget(unet, x, 13 * plane, 4, 2).depth) == 12
    assert int(slabs_for_budget(unet, x, 1, 4, 2).depth) == 4  # the halos: 2 at level 1 = 4 slices of level 0
    assert int(slabs_for_budget(unet, x, 1, 2, 1).depth) == 2
    assert int(slabs_for_budget(unet, x, 10**9, 4, 2).depth) == 40
    assert int(slabs_for_budget(unet, x, 10**9, 16, 2).depth) == 48  # rounded up: still one slab
    assert int(slabs_for_budget(unet, x, 10**9, 16, 2).count) == 1


@pytest.mark.parametrize("precision", ["float32", "bfloat16"], indirect=True)
def test_the_inference_modules_by_slabs_give_the_exported_networks_outputs(precision: str) -> None:
    """The localization network and the SCN (with its spatial part's upsampling and combination per slab) of
    small configurations, behind the export's interface: by slabs of a tiny budget (4 and 8 slices), the same mask
    and the same float16 probabilities as the whole network, bit for bit, in float32 and bfloat16."""
    localization = build_localization_net(LocalizationNetConfig(filters=4, levels=3, seed=1))
    config = SCNConfig(local_filters=4, local_levels=3, spatial_filters=2, spatial_levels=2, seed=2)
    scn = SEGMENTATION_SPEC.build(config)
    image = np.random.default_rng(2).uniform(-0.6, 0.6, (1, 1, 48, 16, 24)).astype(np.float16)
    image[..., 20:30, :, :] += 0.3  # some structure for the networks to find
    image = tf.constant(image)
    for whole, by_slabs in (
        (LocalizationModule(localization), LocalizationModule(localization, slab_budget_bytes=1)),
        (SegmentationModule(scn), SegmentationModule(scn, slab_budget_bytes=1)),
    ):
        expected, found = whole(image).numpy(), by_slabs(image).numpy()
        assert found.shape == expected.shape and found.dtype == expected.dtype
        np.testing.assert_array_equal(found, expected)
    mask = LocalizationModule(localization)(image).numpy()
    assert 0 < mask.sum() < mask.size  # the mask says something
