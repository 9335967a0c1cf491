"""The two-stage pipeline on its own: the spacings it chooses, what each stage is given, what it refuses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.infer import pipeline
from efficientscn.infer.models import Network
from efficientscn.infer.pipeline import (
    InferenceConfig,
    Pipeline,
    _as_image,
    check_processable,
    localization_spacing,
    segmentation_spacing,
)
from efficientscn.infer.utils_module import UtilsModule
from efficientscn.model.contract import PAPER_LOCALIZATION, PAPER_SEGMENTATION, InputContract


@pytest.fixture
def block_segmenter() -> tuple[Pipeline, list[tf.Tensor]]:
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

    segmenter = Pipeline(
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
    segmenter = Pipeline(
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
    empty = Pipeline(nothing, segmenter.segmentation, segmenter.utils)
    ct = np.full((40, 50, 60), -1000, np.int16)
    with pytest.raises(InputError, match="no organs found: the localization network marked no voxel"):
        empty.segment(ct, (3.0, 3.0, 3.0))
    assert empty.segment(ct, (3.0, 3.0, 3.0), require_organs=False).label.shape == ct.shape


def _recording_segmenter(utils: object, coarse: InputContract, fine: InputContract, block: int | None) -> tuple:
    """Stand-in networks recording their inputs: a mask of the central (2 `block`)^3 voxels of the localization
    input (None: all of it, so the box reaches the CT's edges) and probabilities that follow the SCN input."""
    received: dict[str, tf.Tensor] = {}

    def localization(inputs: tf.Tensor) -> tf.Tensor:
        received["localization"] = inputs
        mask = np.zeros(inputs.shape, bool)
        if block is None:
            mask[:] = True
        else:
            mask[(..., *(slice(size // 2 - block, size // 2 + block) for size in inputs.shape[2:]))] = True
        return tf.constant(mask)

    def segmentation(inputs: tf.Tensor) -> tf.Tensor:
        received["segmentation"] = inputs
        levels = tf.constant([-0.4, -0.1, 0.0, 0.05, 0.2], tf.float32)[tf.newaxis, :, tf.newaxis, tf.newaxis, None]
        closeness = tf.exp(-tf.square(tf.cast(inputs, tf.float32) - levels) * 50.0)
        return tf.cast(closeness / tf.reduce_sum(closeness, axis=1, keepdims=True), tf.float16)

    segmenter = Pipeline(
        Network("localization", Path("a"), "rebuilt", "float32", localization, coarse),
        Network("segmentation", Path("b"), "rebuilt", "float32", segmentation, fine),
        utils,  # type: ignore[arg-type]
    )
    return segmenter, received


@pytest.mark.parametrize(
    ("shape", "spacing", "fine", "block", "segmentation_slab"),
    [
        # 70 slices: two localization slabs and a part one; a 128 mm box well inside the CT (the kernel's reach
        # beyond it is read from the CT), smoothed (the paper's contracts)
        ((70, 90, 100), (3.0, 3.0, 3.0), PAPER_SEGMENTATION, 5, pipeline.SEGMENTATION_SLAB),
        # the same box in slabs of 5 slices for the SCN input: each reads the kernel's reach from its neighbours
        ((70, 90, 100), (3.0, 3.0, 3.0), PAPER_SEGMENTATION, 5, 5),
        # the box reaches every edge of the CT: the smoothing mirrors there, in the first and the last slab
        ((45, 60, 64), (3.0, 3.0, 3.0), PAPER_SEGMENTATION, None, 4),
        # 5 slices of 6 mm and a 12 mm kernel: the mirror repeats (the kernel is longer than the CT)
        ((5, 60, 64), (6.0, 3.0, 3.0), InputContract(2.0, ((32, 64),) * 3, smoothing_sigma_mm=12.0), None, 32),
        # no smoothing: the box region itself
        ((70, 100, 140), (3.0, 2.5, 2.0), InputContract(2.0, ((32, 64, 96, 128),) * 3, smoothing_sigma_mm=0.0), 4, 6),
    ],
)
def test_the_lean_steps_give_what_the_original_interface_gives(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    fine: InputContract,
    block: int | None,
    segmentation_slab: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`PipelineFunctions` (the CT converted a slab or a slab of its box region at a time, the label filled in slab
    by slab where the box lies) against the original's interface on the whole CT in float16: the same network
    inputs, details and labels, bit for bit."""
    from efficientscn.infer.utils_module import PipelineFunctions

    monkeypatch.setattr(pipeline, "SEGMENTATION_SLAB", segmentation_slab)
    ct = np.random.default_rng(1).integers(-1024, 2500, shape).astype(np.int16)
    ct[:, : shape[1] // 3] = -1000  # some air, some tissue
    results = []
    for utils in (PipelineFunctions("cpu"), UtilsModule()):
        segmenter, received = _recording_segmenter(utils, PAPER_LOCALIZATION, fine, block)
        segmentation = segmenter.segment(ct, spacing)
        results.append((segmentation, {stage: tensor.numpy() for stage, tensor in received.items()}))
    (lean, lean_inputs), (whole, whole_inputs) = results
    assert lean.details == whole.details
    for stage in ("localization", "segmentation"):
        np.testing.assert_array_equal(lean_inputs[stage], whole_inputs[stage], err_msg=stage)
    np.testing.assert_array_equal(lean.label, whole.label)
    assert 0 < np.count_nonzero(lean.label) < lean.label.size  # the labels say something
    inside = block is not None and all(
        first > 0 and last < size
        for first, last, size in zip(
            np.floor(np.array(lean.details["box_start_mm"]) / spacing),
            np.array(lean.details["box_end_mm"]) / spacing,
            shape,
            strict=True,
        )
    )
    assert inside == (block is not None)  # the cases test what they say


def test_a_localization_contract_that_smooths_takes_the_whole_ct() -> None:
    """Smoothing needs the neighbouring slices: with a smoothing localization contract the lean steps fall back
    to the whole CT, and still equal the original interface."""
    from efficientscn.infer.utils_module import PipelineFunctions

    coarse = InputContract(8.0, ((64, 128), (48, 96), (48, 96)), smoothing_sigma_mm=4.0)
    ct = np.random.default_rng(2).integers(-1000, 1000, (40, 50, 60)).astype(np.int16)
    inputs = []
    for utils in (PipelineFunctions("cpu"), UtilsModule()):
        segmenter, received = _recording_segmenter(utils, coarse, PAPER_SEGMENTATION, 4)
        segmenter.segment(ct, (3.0, 3.0, 3.0))
        inputs.append(received["localization"].numpy())
    np.testing.assert_array_equal(inputs[0], inputs[1])


def test_the_ct_is_converted_to_float16_with_numpys_rounding_for_every_int16_value() -> None:
    every_value = np.arange(-(2**15), 2**15, dtype=np.int16).reshape(2, 128, 256)
    image = _as_image(every_value)
    assert image.dtype == tf.float16 and image.shape == (1, 1, 2, 128, 256)
    assert np.array_equal(image.numpy()[0, 0], every_value.astype(np.float16))
