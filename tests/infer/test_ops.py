"""The inference pre/post-processing (efficientscn.infer.ops) against the original's traced tf_utils_module.

The original's module is GPL data in ../shared/reference: it is only loaded and run here, to compare results.
Its Gaussian is a channels-first float16 conv3d with no CPU kernel, so it runs under XLA (jit_compile).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.ndimage
import SimpleITK as sitk
import tensorflow as tf

from efficientscn.imaging.canonical import to_canonical
from efficientscn.imaging.read import read_ct
from efficientscn.infer import ops
from efficientscn.infer.models import load_network
from efficientscn.infer.pipeline import InferenceConfig, Pipeline, localization_spacing
from efficientscn.infer.utils_module import UtilsModule, load_utils, save_utils_module
from efficientscn.model.contract import PAPER_LOCALIZATION
from efficientscn.model.folder import SHIPPED_MODELS
from efficientscn.model.specs import STAGE_NAMES

from helpers import require_original_models, shared_case

logger = logging.getLogger(__name__)

LOCALIZATION_SIZES = (list(range(32, 257, 16)), [32, 48, 64, 80], [32, 48, 64, 80])  # z first
SEGMENTATION_SIZES = ([32, 64, 96, 128, 160], [32, 64, 96, 128], [32, 64, 96, 128, 160])
F16_HU = 1 / 2048
"""One HU in the networks' input units."""


def _i32(values: Any) -> tf.Tensor:
    return tf.constant(values, tf.int32)


def _f32(values: Any) -> tf.Tensor:
    return tf.constant(values, tf.float32)


def _sizes(sizes: tuple[list[int], ...]) -> list[tf.Tensor]:
    return [_i32(axis) for axis in sizes]


def _numpy(result: Any) -> list[np.ndarray]:
    return [np.asarray(value) for value in tf.nest.flatten(result)]


def assert_identical(ours: Any, theirs: Any, label: str = "") -> None:
    """Every tensor of two (nested) results equal: dtype, shape and every value."""
    ours, theirs = _numpy(ours), _numpy(theirs)
    assert len(ours) == len(theirs), label
    for mine, other in zip(ours, theirs, strict=True):
        assert (mine.dtype, mine.shape) == (other.dtype, other.shape), label
        np.testing.assert_array_equal(mine, other, err_msg=label)


@pytest.fixture(scope="module")
def original() -> Any:
    """The original's tf_utils_module; skips if missing, fails under CI."""
    return tf.saved_model.load(str(require_original_models() / "tf_utils_module"))


@pytest.fixture(scope="module")
def utils() -> UtilsModule:
    return UtilsModule()


_CT_CACHE: dict[str, tuple[tf.Tensor, tf.Tensor]] = {}


def canonical_ct(case_id: str) -> tuple[tf.Tensor, tf.Tensor]:
    """(float16 [1, 1, D, H, W], spacing zyx) of a shared case on the canonical grid, as the pipeline builds it."""
    if case_id not in _CT_CACHE:
        image, _ = to_canonical(read_ct(shared_case(case_id).image))
        array = sitk.GetArrayFromImage(image).astype(np.float16)[np.newaxis, np.newaxis]
        _CT_CACHE[case_id] = tf.constant(array), _f32(image.GetSpacing()[::-1])
    return _CT_CACHE[case_id]


def coarse_spacing(image: tf.Tensor, spacing: tf.Tensor) -> tf.Tensor:
    """The localization spacing of a CT as inference computes it: 6 mm, grown if the scan would not fit."""
    return _f32(localization_spacing(tuple(image.shape[2:]), spacing.numpy(), PAPER_LOCALIZATION, InferenceConfig()))


def probability_map(shape: tuple[int, ...], seed: int, batch: int = 1) -> tf.Tensor:
    """A float16 [batch, 5, ...] softmax of smoothed random logits: organ-like regions, ties unlikely."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, 5, *shape)).astype(np.float32)
    smooth = ops.gaussian(tf.constant(logits.reshape(batch * 5, 1, *shape)), _f32(1.5)).numpy()
    smooth = 8.0 * smooth.reshape(batch, 5, *shape)
    smooth[:, 0] += 0.5  # background a little more likely, as in a real output
    weights = np.exp(smooth - smooth.max(axis=1, keepdims=True))
    return tf.constant((weights / weights.sum(axis=1, keepdims=True)).astype(np.float16))


def direct_postprocess(probabilities: tf.Tensor, paddings: Any, croppings: Any, size: Any) -> np.ndarray:
    """The reference: a full two-pass float32 linear resize to the crop, argmax, crop the padding, pad with 0."""
    values = tf.cast(probabilities, tf.float32)
    n, c, d, h, w = values.shape
    planes = tf.image.resize(tf.reshape(values, [-1, h, w, 1]), size[1:], "bilinear")
    rows = tf.transpose(tf.reshape(planes, [n * c, d, size[1], size[2]]), [0, 3, 2, 1])  # D as the width
    volumes = tf.image.resize(tf.reshape(rows, [-1, size[1], d, 1]), [size[1], size[0]], "bilinear")
    volumes = tf.transpose(tf.reshape(volumes, [n, c, size[2], size[1], size[0]]), [0, 1, 4, 3, 2])
    labels = tf.cast(tf.argmax(volumes, axis=1), tf.uint8)[:, tf.newaxis]
    return ops.pad_image(ops.crop_image(labels, _i32(paddings)), _i32(croppings), 0).numpy()


# --- parity with the original ----------------------------------------------------------------------------------


def test_sizes_match_the_original(original: Any) -> None:
    for size, spacing in (([130, 512, 512], [2.5, 0.7, 0.7]), ([20, 512, 512], [2.0, 0.9766, 0.9766])):
        args = (_i32(size), _f32(spacing), _f32([6.0, 6.0, 6.0]))
        assert_identical(ops.size_for_spacing(*args), original.size_for_spacing(*args))
    halved = ops.size_for_spacing(_i32([100, 10, 7]), _f32([3.0, 3.0, 3.0]), _f32([6.0, 6.0, 6.0]))
    assert halved.numpy().tolist() == [50, 5, 4]  # rounded up
    sizes = _sizes(LOCALIZATION_SIZES)
    for size in ([55, 64, 40], [48, 48, 100], [300, 10, 80], [32, 32, 32]):
        assert_identical(ops.get_valid_size(_i32(size), *sizes), original.get_valid_size(_i32(size), *sizes))
    # z first; strictly greater (an exact fit takes the next size); past the end, the last size
    assert ops.get_valid_size(_i32([48, 48, 100]), *sizes).numpy().tolist() == [64, 64, 80]
    assert ops.get_valid_size(_i32([300, 10, 80]), *sizes).numpy().tolist() == [256, 32, 80]


@pytest.mark.parametrize("case_id", ["ts_example_ct", "ts_example_ct_dicom"])
def test_localization_input_equals_the_original_bit_for_bit(original: Any, case_id: str) -> None:
    image, spacing = canonical_ct(case_id)
    args = (image, spacing, coarse_spacing(image, spacing), _f32(0.0), *_sizes(LOCALIZATION_SIZES))
    ours, theirs = ops.preprocess_for_localization(*args), original.preprocess_for_localization(*args)
    assert ours[0].dtype == tf.float16 and ours[0].shape[:2] == (1, 1)
    assert_identical(ours, theirs)  # max abs difference 0: the same area resizes and float16 roundings
    assert float(tf.reduce_min(tf.cast(ours[0], tf.float32))) == -0.5  # the -1024 HU padding, / 2048


def test_localization_input_of_a_ct_too_large_for_the_largest_input_equals_the_original(original: Any) -> None:
    image, spacing = canonical_ct("ts_example_ct")  # 112 x 101 x 122 voxels (z, y, x) of 3 mm
    large = tf.pad(image, [[0, 0], [0, 0], [0, 0], [40, 40], [60, 60]], constant_values=-1024)  # 543 x 726 mm in y, x
    coarse = coarse_spacing(large, spacing)
    # the original's inference: 726 mm / 6 mm = 121 voxels, 121 / 80 + 0.02 = 1.5325, so 9.195 mm on every axis
    np.testing.assert_allclose(coarse, 6.0 * 1.5325, rtol=1e-6)
    args = (large, spacing, coarse, _f32(0.0), *_sizes(LOCALIZATION_SIZES))
    ours, theirs = ops.preprocess_for_localization(*args), original.preprocess_for_localization(*args)
    assert_identical(ours, theirs)
    assert ours[0].shape[2:] == (48, 64, 80)  # 37, 60 and 79 voxels of 9.195 mm: the largest x still fits


def test_localization_box_equals_the_original(original: Any) -> None:
    image, spacing = canonical_ct("ts_example_ct")
    coarse = coarse_spacing(image, spacing)
    inputs, paddings = ops.preprocess_for_localization(image, spacing, coarse, _f32(0.0), *_sizes(LOCALIZATION_SIZES))
    mask = np.asarray(inputs) > -100 * F16_HU  # the body, then cut to an organ-sized part of it
    mask[:, :, :20] = False
    mask[:, :, :, 40:] = False
    mask = tf.constant(mask)
    end, start = ops.bbox_from_localization_output(mask, coarse, paddings)
    assert_identical((end, start), original.bbox_from_localization_output(mask, coarse, paddings))
    first, last = (np.argwhere(np.asarray(mask)[0, 0]).min(0), np.argwhere(np.asarray(mask)[0, 0]).max(0))
    before = np.asarray(paddings)[:, 0]
    np.testing.assert_allclose(start, 6.0 * (first - before) - 10.0, rtol=1e-6)
    np.testing.assert_allclose(end, 6.0 * (last + 1 - before) + 10.0, rtol=1e-6)


def test_empty_localization_mask_gives_the_whole_padded_grid_plus_10_mm(original: Any) -> None:
    mask = tf.zeros([1, 1, 48, 64, 80], tf.bool)
    paddings, spacing = _i32([[3, 4], [6, 7], [10, 10]]), _f32([6.0, 6.5, 7.0])
    end, start = ops.bbox_from_localization_output(mask, spacing, paddings)
    assert_identical((end, start), original.bbox_from_localization_output(mask, spacing, paddings))
    np.testing.assert_allclose(start, [-6.0 * 3 - 10, -6.5 * 6 - 10, -7.0 * 10 - 10])
    np.testing.assert_allclose(end, [6.0 * 45 + 10, 6.5 * 58 + 10, 7.0 * 70 + 10])


def test_valid_segmentation_box_equals_the_original(original: Any) -> None:
    sizes = _sizes(SEGMENTATION_SIZES)
    boxes = (([150.3, 200.7, 180.1], [-10.2, 30.4, 20.9]), ([330.0, 250.0, 330.0], [10.0, 10.0, 10.0]))
    for end, start in boxes:
        for spacing in ([2.0, 2.0, 2.0], [2.3, 2.3, 2.3]):
            args = (_f32(end), _f32(start), _f32(spacing), *sizes)
            ours = ops.valid_bbox_extent_for_segmentation(*args)
            assert_identical(ours, original.valid_bbox_extent_for_segmentation(*args))
            new_start, new_end, valid = _numpy(ours)  # (start, end, valid size): not the localization's order
            assert np.all(new_start < new_end) and valid.dtype == np.int32
    start, end, valid = _numpy(
        ops.valid_bbox_extent_for_segmentation(_f32([138.0] * 3), _f32([10.0] * 3), _f32([2.0] * 3), *sizes)
    )
    assert valid.tolist() == [96, 96, 96]  # 64 voxels fit 64 exactly: strictly greater takes 96 (docs/fidelity.md #1)
    np.testing.assert_allclose(end - start, [192.0] * 3)


def test_crop_and_pad_with_bbox_equals_the_original_and_pads_outside_with_0(original: Any) -> None:
    image, spacing = canonical_ct("ts_example_ct_dicom")
    extent = np.array(image.shape[2:]) * spacing.numpy()
    inside = (extent * 0.3, extent * 0.6)
    leaving = (np.array([-7.0, -20.0, 100.0]), extent + np.array([5.0, 0.0, 30.0]))
    for start, end in (inside, leaving):
        args = (image, spacing, _f32(start), _f32(end), ops.CHANNELS_FIRST)
        ours = ops.crop_and_pad_with_bbox(*args)
        assert_identical(ours, original.crop_and_pad_with_bbox(*args))
    cropped, paddings, croppings = _numpy(ours)
    assert paddings[:, 0].tolist()[:2] == [4, 21] and np.all(paddings[:, 1] > 0)
    assert np.all(cropped[:, :, : paddings[0, 0]] == 0)  # docs/fidelity.md #5: 0, not -1024
    assert croppings[2, 0] > 0 and croppings[:2, 0].tolist() == [0, 0]


@pytest.mark.parametrize("case_id", ["ts_example_ct", "ts_example_ct_dicom"])
def test_segmentation_input_equals_the_original(original: Any, case_id: str) -> None:
    image, spacing = canonical_ct(case_id)
    extent = np.array(image.shape[2:]) * spacing.numpy()
    end, start = _f32(extent * 0.75), _f32(extent * 0.2 * [0.0, 1.0, 1.0] - [30.0, 0.0, 0.0])  # leaves at z 0
    new_spacing, sizes = _f32([2.0, 2.0, 2.0]), _sizes(SEGMENTATION_SIZES)

    # sigma 0: the original's function runs on a CPU as it is, and the results are bit-equal
    args = (image, spacing, new_spacing, end, start, _f32(0.0), *sizes)
    assert_identical(ops.preprocess_for_segmentation(*args), original.preprocess_for_segmentation(*args))

    # sigma 1 mm: its Gaussian needs XLA, and ResizeArea has no XLA kernel: the original's steps one by one
    ours = _numpy(ops.preprocess_for_segmentation(image, spacing, new_spacing, end, start, _f32(1.0), *sizes))
    box_start, box_end, valid = original.valid_bbox_extent_for_segmentation(end, start, new_spacing, *sizes)
    smoothed = tf.function(original.smooth_image, jit_compile=True)(image, spacing, _f32(1.0))
    cropped, paddings, croppings = original.crop_and_pad_with_bbox(
        smoothed, spacing, box_start, box_end, ops.CHANNELS_FIRST
    )
    resized = original.intensity_postprocessing_ct(original.resize_image(cropped, valid, "area", ops.CHANNELS_FIRST))
    theirs = _numpy((resized, tf.shape(cropped)[2:], croppings, paddings))
    for mine, other in zip(ours[1:], theirs[1:], strict=True):
        np.testing.assert_array_equal(mine, other)
    assert ours[3][0, 0] > 0  # the box left the image: padded
    difference = np.abs(ours[0].astype(np.float32) - theirs[0].astype(np.float32))
    # the original rounds its kernel and each of its three filter passes to float16 (up to 1 HU each in this range),
    # this filters in float32: up to 4 HU apart (measured 4.0 HU on ts_example_ct), about 0.1 HU on average
    assert difference.max() <= 4 * F16_HU and difference.mean() <= 0.25 * F16_HU


def test_postprocess_labels_agree_with_the_original(original: Any) -> None:
    probabilities = probability_map((24, 40, 36), seed=3)
    paddings, croppings, size = _i32([[3, 5], [0, 4], [7, 0]]), _i32([[2, 1], [4, 0], [0, 9]]), _i32([61, 97, 83])
    ours = ops.postprocess_for_segmentation(probabilities, paddings, croppings, size).numpy()
    theirs = original.postprocess_for_segmentation(probabilities, paddings, croppings, size).numpy()
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape == (1, 1, 56, 97, 85)
    # the original rounds the probabilities to float16 after each resize pass; this keeps float32
    assert np.mean(ours == theirs) >= 0.999
    assert np.all(ours[:, :, :2] == 0) and np.all(ours[:, :, :, :, -9:] == 0)  # the croppings: background
    assert set(np.unique(ours)) == {0, 1, 2, 3, 4}


class _RecordingUtils:
    """A utils module that remembers the arguments of its last `postprocess_for_segmentation`."""

    def __init__(self, utils: Any) -> None:
        self._utils, self.postprocessed = utils, ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._utils, name)

    def postprocess_for_segmentation(self, *args: Any) -> tf.Tensor:
        self.postprocessed = args
        return self._utils.postprocess_for_segmentation(*args)


@pytest.mark.parametrize("case_id", ["ts_example_ct", "ts_example_ct_dicom"])
def test_postprocess_labels_on_real_ct_agree_with_the_original(original: Any, case_id: str) -> None:
    """Real probabilities, the shipped models' on a shared CT, made into labels by ours and by the original's."""
    utils = _RecordingUtils(UtilsModule())
    networks = [load_network(SHIPPED_MODELS / stage, stage, "cpu", "float32") for stage in STAGE_NAMES]
    image, spacing = canonical_ct(case_id)
    ours = Pipeline(*networks, utils).segment(image.numpy()[0, 0].astype(np.int16), spacing.numpy()).label
    theirs = original.postprocess_for_segmentation(*utils.postprocessed).numpy()[0, 0]
    differing, organs = int(np.sum(ours != theirs)), int(np.sum((ours > 0) | (theirs > 0)))
    logger.info("%s: %d of %d organ voxels differ", case_id, differing, organs)
    # the original rounds the probabilities to float16, which moves near-ties: 15 and 28 voxels with the shipped models
    assert organs > 10_000 and differing <= 1e-3 * organs


# --- our own guarantees ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low_resolution", "size", "slab_size", "batch"),
    [
        ((20, 24, 28), (53, 61, 70), ops.POSTPROCESS_SLAB, 1),  # z upsampled
        ((40, 24, 28), (23, 61, 70), ops.POSTPROCESS_SLAB, 1),  # z downsampled
        ((16, 20, 20), (45, 30, 50), 7, 2),  # a batch, slabs of 7
        ((9, 12, 12), (9, 12, 12), 4, 1),  # the same size
    ],
)
def test_postprocess_slabs_equal_the_full_resize(
    low_resolution: tuple[int, ...], size: tuple[int, ...], slab_size: int, batch: int
) -> None:
    probabilities = probability_map(low_resolution, seed=sum(size), batch=batch)
    paddings, croppings = [[3, 5], [0, 4], [2, 1]], [[2, 1], [4, 0], [0, 9]]
    ours = ops.postprocess_for_segmentation(
        probabilities, _i32(paddings), _i32(croppings), _i32(size), slab_size=slab_size
    ).numpy()
    np.testing.assert_array_equal(ours, direct_postprocess(probabilities, paddings, croppings, size))


@pytest.mark.parametrize(
    ("begin", "end"),
    [([0, 0, 300], [12, 150, 512]), ([5, 100, 150], [15, 400, 420])],
    ids=["at-the-border", "inside"],
)
def test_smoothing_the_box_equals_smoothing_the_whole_ct(begin: list[int], end: list[int]) -> None:
    image, spacing = canonical_ct("ts_example_ct_dicom")
    image = tf.cast(image, tf.float32)  # float32 in, float32 out: compare before any float16 rounding
    sigma = _f32([1.0, 1.0, 1.0]) / spacing
    whole = ops.gaussian(image, sigma).numpy()[:, :, begin[0] : end[0], begin[1] : end[1], begin[2] : end[2]]
    box = ops._smoothed_region(image, _i32(begin), _i32(end), sigma).numpy()
    assert box.shape == whole.shape
    np.testing.assert_allclose(box, whole, rtol=0, atol=np.abs(whole).max() * 2e-7)


def test_segmentation_input_equals_smoothing_the_whole_ct_first() -> None:
    image, spacing = canonical_ct("ts_example_ct_dicom")
    extent = np.array(image.shape[2:]) * spacing.numpy()
    new_spacing, sizes, sigma = _f32([2.0, 2.0, 2.0]), _sizes(SEGMENTATION_SIZES), _f32(1.0)
    whole = ops.smooth_image(image, spacing, sigma)
    for end, start in ((extent * 0.75, extent * [0.0, 0.2, 0.2] - [30.0, 0.0, 0.0]), (extent * 0.6, extent * 0.4)):
        ours = ops.preprocess_for_segmentation(image, spacing, new_spacing, _f32(end), _f32(start), sigma, *sizes)
        box_start, box_end, valid = ops.valid_bbox_extent_for_segmentation(_f32(end), _f32(start), new_spacing, *sizes)
        cropped, paddings, croppings = ops.crop_and_pad_with_bbox(whole, spacing, box_start, box_end)
        expected = ops.intensity_postprocessing_ct(ops.resize_image(cropped, valid, "area"))
        assert_identical(ours, (expected, tf.shape(cropped)[2:], croppings, paddings))


def test_smoothing_an_image_thinner_than_the_kernel_mirrors_repeatedly() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 1, 3, 8, 9)).astype(np.float32)
    sigma = [2.0, 1.0, 0.5]  # half-widths 9, 5, 3: the z mirror is longer than the 3 slices
    smoothed = ops.gaussian(tf.constant(image), _f32(sigma)).numpy()[0, 0]
    reference = image[0, 0].astype(np.float64)
    for axis, s in enumerate(sigma):
        half = int(np.ceil(4 * s + 0.5))
        kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / s) ** 2)
        widths = [(half, half) if other == axis else (0, 0) for other in range(3)]
        padded = np.pad(reference, widths, mode="symmetric")
        reference = np.apply_along_axis(lambda v, k=kernel: np.convolve(v, k / k.sum(), "valid"), axis, padded)
    np.testing.assert_allclose(smoothed, reference, atol=1e-5)


def test_gaussian_is_exact_and_equals_the_original_within_float16_rounding(original: Any) -> None:
    image, _ = canonical_ct("ts_example_ct")
    sigma = [1.0, 1.25, 0.8]
    ours = ops.gaussian(image, _f32(sigma)).numpy()[0, 0].astype(np.float64)
    reference = np.asarray(image)[0, 0].astype(np.float64)
    for axis, s in enumerate(sigma):  # float64, mirrored including the edge voxel: scipy's 'reflect'
        half = int(np.ceil(4 * s + 0.5))
        kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / s) ** 2)
        reference = scipy.ndimage.correlate1d(reference, kernel / kernel.sum(), axis=axis, mode="reflect")
    step = np.spacing(np.maximum(np.abs(reference), 1024).astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(ours - reference) <= 0.5 * step + 1e-3)  # one float16 rounding of the exact result

    theirs = tf.function(original.gaussian, jit_compile=True)(image, _f32(sigma)).numpy()[0, 0].astype(np.float64)
    # the original rounds its kernel (sigma 0.8 is not a float16) and each pass to float16: 3 steps at most
    assert np.all(np.abs(ours - theirs) <= 4 * step) and np.mean(np.abs(ours - theirs)) <= 0.5
    kernel = ops.gaussian_kernel1d(tf.constant(1.25, tf.float16), 13)
    assert kernel.dtype == tf.float16 and kernel.shape == (13,)
    np.testing.assert_allclose(kernel, original.gaussian_kernel1d(tf.constant(1.25, tf.float16), 13), atol=1e-4)


def test_channels_last_is_refused() -> None:
    with pytest.raises(ValueError, match="channels_first"):
        ops.pad_image(tf.zeros([1, 1, 2, 2, 2], tf.float16), _i32([[0, 0]] * 3), 0, "channels_last")
    with pytest.raises(ValueError, match="interpolator"):
        ops.resize_image(tf.zeros([1, 1, 2, 2, 2], tf.float16), _i32([3, 3, 3]), "cubic")


@pytest.fixture(scope="module")
def saved_utils(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = save_utils_module(tmp_path_factory.mktemp("utils") / "tf_utils_module")
    with pytest.raises(FileExistsError):
        save_utils_module(path)
    return load_utils(path)


def _signatures(module: Any, name: str) -> list[str]:
    found = []
    for function in getattr(module, name).concrete_functions:
        args, _ = function.structured_input_signature
        found.append(
            str(
                [
                    (arg.shape.as_list() if arg.shape.rank is not None else None, arg.dtype.name)
                    if isinstance(arg, tf.TensorSpec)
                    else arg
                    for arg in args
                ]
            )
        )
    return sorted(found)


def test_saved_module_has_the_original_signatures(saved_utils: Any, original: Any) -> None:
    names = [name for name in dir(original) if hasattr(getattr(original, name), "concrete_functions")]
    traced = [name for name in names if getattr(original, name).concrete_functions]
    assert len(traced) == 17  # the two simulate_* helpers were saved without traces and are left out
    for name in traced:
        assert _signatures(saved_utils, name) == _signatures(original, name), name


def test_saved_module_gives_the_results_of_the_functions(saved_utils: Any, utils: UtilsModule) -> None:
    image, spacing = canonical_ct("ts_example_ct")
    coarse = coarse_spacing(image, spacing)
    probabilities = probability_map((16, 20, 24), seed=1)
    amounts = _i32([[1, 0], [0, 2], [3, 3]])
    calls: dict[str, Callable[[Any], Any]] = {
        "localization": lambda m: m.preprocess_for_localization(
            image, spacing, coarse, _f32(0.0), *_sizes(LOCALIZATION_SIZES)
        ),
        "box": lambda m: m.bbox_from_localization_output(
            tf.constant(np.asarray(image)[:, :, ::6, ::6, ::6] > 0), coarse, amounts
        ),
        "segmentation": lambda m: m.preprocess_for_segmentation(
            image,
            spacing,
            _f32([2.0] * 3),
            _f32([250.0, 250.0, 300.0]),
            _f32([-5.0, 40.0, 50.0]),
            _f32(1.0),
            *_sizes(SEGMENTATION_SIZES),
        ),
        "labels": lambda m: m.postprocess_for_segmentation(
            probabilities, _i32([[1, 2], [0, 0], [3, 0]]), _i32([[5, 6], [7, 8], [0, 9]]), _i32([40, 50, 60])
        ),
        "area": lambda m: m.resize_image(image, _i32([20, 30, 40]), "area", ops.CHANNELS_FIRST),
        "pad": lambda m: m.pad_image(tf.cast(image > 0, tf.uint8), amounts, 0, ops.CHANNELS_FIRST),
        "crop": lambda m: m.crop_image(image, amounts, ops.CHANNELS_FIRST),
        "smooth": lambda m: m.smooth_image(image, spacing, _f32(1.5)),
    }
    for name, call in calls.items():
        assert_identical(call(saved_utils), call(utils), name)
