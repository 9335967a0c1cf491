"""The two-stage pipeline on its own: the spacings it chooses, what each stage is given, what it refuses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.infer.models import Network
from efficientscn.infer.pipeline import (
    InferenceConfig,
    Segmenter,
    check_processable,
    localization_spacing,
    segmentation_spacing,
)
from efficientscn.infer.utils_module import UtilsModule
from efficientscn.model.contract import PAPER_LOCALIZATION, PAPER_SEGMENTATION, InputContract


@pytest.fixture
def block_segmenter() -> tuple[Segmenter, list[tf.Tensor]]:
    """The pipeline with stand-in networks (an organ-sized block amid the localization input, uniform
    probabilities), and the list of the localization inputs it received."""
    received: list[tf.Tensor] = []

    def central_block(inputs: tf.Tensor) -> tf.Tensor:
        received.append(inputs)
        mask = np.zeros(inputs.shape, bool)
        mask[..., 8:-8, 8:-8, 8:-8] = True
        return tf.constant(mask)

    def uniform(inputs: tf.Tensor) -> tf.Tensor:
        return tf.fill([1, 5, *inputs.shape[2:]], tf.constant(0.2, tf.float16))

    segmenter = Segmenter(
        Network("localization", Path("block"), "rebuilt", "float32", central_block, PAPER_LOCALIZATION),
        Network("segmentation", Path("uniform"), "rebuilt", "float32", uniform, PAPER_SEGMENTATION),
        UtilsModule(),
    )
    return segmenter, received


def test_localization_spacing_grows_for_large_scans() -> None:
    config = InferenceConfig()
    np.testing.assert_allclose(localization_spacing((150, 512, 512), (2.5, 0.8, 0.8), PAPER_LOCALIZATION, config), 6.0)
    # 512 x 0.977 mm: 84 voxels at 6 mm, /80 = 1.05 (+0.02) -> 6.42 mm, the original's figure
    np.testing.assert_allclose(
        localization_spacing((100, 512, 512), (2.0, 0.977, 0.977), PAPER_LOCALIZATION, config), 6.42, atol=0.01
    )
    # growth already starts above a ratio of 0.98 (the margin is added before the test, docs/fidelity.md #11)
    np.testing.assert_allclose(
        localization_spacing((100, 79 * 6, 10), (1.0, 1.0, 1.0), PAPER_LOCALIZATION, config), 6 * (79 / 80 + 0.02)
    )


def test_each_ct_of_a_batch_is_localized_at_its_own_spacing(block_segmenter: tuple) -> None:
    """The original's inference reassigns its localization spacing inside the batch loop, so once a large CT has
    grown it, every later CT is localized coarser too; here each CT gets its own (docs/fidelity.md #33)."""
    segmenter, _ = block_segmenter
    large, small = np.full((40, 100, 100), -1000, np.int16), np.full((40, 40, 40), -1000, np.int16)
    spacings = [
        segmenter.segment(ct, spacing).details["localization_spacing_mm"]
        for ct, spacing in ((large, (3.0, 6.0, 6.0)), (small, (3.0, 3.0, 3.0)), (large, (3.0, 6.0, 6.0)))
    ]
    # 600 mm: 100 voxels of 6 mm, 100 / 80 + 0.02 = 1.27; the 120 mm CT after it at 6 mm, as if it came first
    np.testing.assert_allclose(spacings, [[6 * 1.27] * 3, [6.0] * 3, [6 * 1.27] * 3], rtol=1e-6)


def test_the_localization_network_sees_the_unsmoothed_ct(block_segmenter: tuple) -> None:
    # kept from the original (docs/fidelity.md #3): trained on CTs smoothed with sigma 3 mm, run on unsmoothed ones
    segmenter, received = block_segmenter
    ct = np.random.default_rng(0).integers(-1000, 1000, (40, 40, 40)).astype(np.int16)
    segmenter.segment(ct, (3.0, 3.0, 3.0))
    image, spacing, coarse = (
        tf.constant(ct.astype(np.float16)[None, None]),
        tf.constant([3.0] * 3),
        tf.constant([6.0] * 3),
    )
    sizes = [tf.constant(axis, tf.int32) for axis in PAPER_LOCALIZATION.valid_sizes_zyx]
    for sigma, same in ((0.0, True), (3.0, False)):
        expected, _ = UtilsModule().preprocess_for_localization(image, spacing, coarse, tf.constant(sigma), *sizes)
        assert np.array_equal(received[-1].numpy(), expected.numpy()) == same


def test_segmentation_spacing_grows_isotropically_for_large_boxes() -> None:
    config = InferenceConfig()
    np.testing.assert_allclose(
        segmentation_spacing(np.zeros(3), np.array([200.0, 200.0, 300.0]), PAPER_SEGMENTATION, config), 2.0
    )
    # 300 mm in y over 128 voxels needs 2.34 mm: all axes go to 2.34 + 0.1
    np.testing.assert_allclose(
        segmentation_spacing(np.zeros(3), np.array([200.0, 300.0, 200.0]), PAPER_SEGMENTATION, config),
        300 / 128 + 0.1,
        rtol=1e-6,
    )


def test_too_small_and_too_large_cts_are_refused_with_the_reason() -> None:
    config = InferenceConfig(max_voxels=10**6)
    check_processable((20, 512, 512), (2.0, 0.98, 0.98), InferenceConfig())
    with pytest.raises(InputError, match=r"too small.*3 voxel.*along z cover 3 mm"):
        check_processable((3, 512, 512), (1.0, 0.8, 0.8), InferenceConfig())
    with pytest.raises(InputError, match="too large"):
        check_processable((200, 512, 512), (1.0, 0.8, 0.8), config)


def test_each_stage_gets_the_spacing_sizes_and_smoothing_of_its_networks_contract() -> None:
    """Stand-in networks with contracts the paper does not use: the pipeline feeds them their own grids."""
    received: dict[str, tf.Tensor] = {}

    def localization(inputs: tf.Tensor) -> tf.Tensor:
        received["localization"] = inputs
        mask = np.zeros(inputs.shape, bool)
        mask[..., 8:-8, 8:-8, 8:-8] = True
        return tf.constant(mask)

    def segmentation(inputs: tf.Tensor) -> tf.Tensor:
        received["segmentation"] = inputs
        return tf.fill([1, 5, *inputs.shape[2:]], tf.constant(0.2, tf.float16))

    coarse = InputContract(8.0, ((64, 128), (48, 96), (48, 96)), smoothing_sigma_mm=4.0)
    fine = InputContract(3.0, ((64,), (64,), (64,)), smoothing_sigma_mm=2.0)
    segmenter = Segmenter(
        Network("localization", Path("a"), "rebuilt", "float32", localization, coarse),
        Network("segmentation", Path("b"), "rebuilt", "float32", segmentation, fine),
        UtilsModule(),
    )
    ct = np.random.default_rng(0).integers(-1000, 1000, (100, 120, 140)).astype(np.int16)
    details = segmenter.segment(ct, (3.0, 3.0, 3.0)).details
    # 300 x 360 x 420 mm at 8 mm: 38, 45, 53 voxels -> 64 (z) and 48 / 96 (y, x) of the contract's sizes
    assert details["localization_spacing_mm"] == pytest.approx([8.0] * 3)
    assert list(received["localization"].shape[2:]) == details["localization_input_zyx"] == [64, 48, 96]
    assert details["segmentation_spacing_mm"][0] >= 3.0 and list(received["segmentation"].shape[2:]) == [64] * 3
    image = tf.constant(ct.astype(np.float16)[None, None])
    sizes = [tf.constant(axis, tf.int32) for axis in coarse.valid_sizes_zyx]
    for sigma, same in ((4.0, True), (0.0, False)):  # smoothed as the contract says, not as the paper (unsmoothed)
        expected, _ = UtilsModule().preprocess_for_localization(
            image, tf.constant([3.0] * 3), tf.constant([8.0] * 3), tf.constant(sigma), *sizes
        )
        assert np.array_equal(received["localization"].numpy(), expected.numpy()) == same


def test_no_organ_found_is_refused_unless_organs_are_not_required(block_segmenter: tuple) -> None:
    """A localization mask without a voxel: the original segments the whole CT's box (docs/fidelity.md #34); we
    refuse the case, except when asked not to (the import's probe)."""
    segmenter, _ = block_segmenter
    nothing = dataclasses.replace(segmenter.localization, run=lambda inputs: tf.zeros(inputs.shape, tf.bool))
    empty = Segmenter(nothing, segmenter.segmentation, segmenter.utils)
    ct = np.full((40, 50, 60), -1000, np.int16)
    with pytest.raises(InputError, match="no organs found: the localization network marked no voxel"):
        empty.segment(ct, (3.0, 3.0, 3.0))
    assert empty.segment(ct, (3.0, 3.0, 3.0), require_organs=False).label.shape == ct.shape
