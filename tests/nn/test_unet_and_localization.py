"""Layers and networks of efficientscn.nn: upsampling, the U-Net, and the localization net against the original's."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from efficientscn.imaging.canonical import to_canonical
from efficientscn.imaging.geometry import spacing_with_fallback
from efficientscn.imaging.read import read_ct
from efficientscn.nn.config import LocalizationNetConfig
from efficientscn.nn.localization import build_localization_net, load_original_localization_weights
from efficientscn.nn.unet import UNet3D
from efficientscn.nn.upsample import UpSampling3DCubic, UpSampling3DLinear, keys_cubic_kernel, linear_kernel, phase_taps
from efficientscn.nn.weights import assign_weights_by_order, checkpoint_shapes, numbered_variable_keys

from helpers import ORIGINAL_MODELS, require_original_models, shared_case

logger = logging.getLogger(__name__)

LOCALIZATION_CHECKPOINT = ORIGINAL_MODELS / "localization" / "variables" / "variables"
SEGMENTATION_CHECKPOINT = ORIGINAL_MODELS / "segmentation" / "variables" / "variables"
LAYERS = {"linear": UpSampling3DLinear, "cubic": UpSampling3DCubic}
KERNELS = {"linear": (linear_kernel, 1), "cubic": (keys_cubic_kernel, 2)}


# ---------------------------------------------------------------------------------------------------------------
# Upsampling


def _reference_upsample(x: np.ndarray, factor: int, method: str) -> np.ndarray:
    """NumPy reference: per spatial axis, a dense interpolation matrix with clamped (edge-replicate) indices."""
    kernel, support = KERNELS[method]
    for axis in (1, 2, 3):
        n = x.shape[axis]
        matrix = np.zeros((n * factor, n))
        for out in range(n * factor):
            centre = (out + 0.5) / factor - 0.5
            for tap in range(int(np.floor(centre)) - support, int(np.floor(centre)) + support + 2):
                matrix[out, min(max(tap, 0), n - 1)] += kernel(centre - tap)
        x = np.moveaxis(np.tensordot(matrix, np.moveaxis(x, axis, 0), axes=1), 0, axis)
    return x


def _tf_resize_per_axis(x: np.ndarray, factor: int, method: str) -> np.ndarray:
    """tf.image.resize (TF2: half-pixel centres, no antialiasing when upsampling) applied to one axis at a time."""
    for axis in (1, 2, 3):
        moved = np.moveaxis(x, axis, 1)
        images = moved.reshape(moved.shape[0], moved.shape[1], 1, -1)
        resized = tf.image.resize(images, (moved.shape[1] * factor, 1), method=method).numpy()
        x = np.moveaxis(resized.reshape(moved.shape[0], -1, *moved.shape[2:]), 1, axis)
    return x


def _random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_linear_factor_2_weights_are_quarter_and_three_quarters() -> None:
    assert phase_taps(2, linear_kernel, 1) == [[(-1, 0.25), (0, 0.75)], [(0, 0.75), (1, 0.25)]]


@pytest.mark.parametrize("method", ["linear", "cubic"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_phase_weights_sum_to_one(method: str, factor: int) -> None:
    for taps in phase_taps(factor, *KERNELS[method]):
        assert sum(w for _, w in taps) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("method", "factor"), [("linear", 2), ("linear", 3), ("linear", 4), ("cubic", 2), ("cubic", 4)]
)
def test_upsampling_matches_numpy_reference(method: str, factor: int) -> None:
    x = _random((2, 5, 6, 7, 3))
    result = LAYERS[method](factor)(x)
    assert tuple(result.shape) == (2, 5 * factor, 6 * factor, 7 * factor, 3)
    np.testing.assert_allclose(result.numpy(), _reference_upsample(x.astype(np.float64), factor, method), atol=2e-6)


@pytest.mark.parametrize("factor", [2, 4])
def test_linear_upsampling_equals_tf_bilinear_resize_along_each_axis(factor: int) -> None:
    x = _random((2, 4, 6, 5, 3), seed=1)
    np.testing.assert_allclose(
        UpSampling3DLinear(factor)(x).numpy(), _tf_resize_per_axis(x, factor, "bilinear"), atol=1e-6
    )


def test_cubic_upsampling_equals_tf_bicubic_resize_away_from_the_borders() -> None:
    # Same Keys a=-0.5 kernel; at the borders TF renormalises the taps outside the image while we (as the
    # original) replicate the edge voxel, so only voxels at least 2 input voxels from every border are compared.
    x, factor = _random((1, 8, 9, 10, 2), seed=2), 4
    ours, tf_resized = UpSampling3DCubic(factor)(x).numpy(), _tf_resize_per_axis(x, factor, "bicubic")
    inner = (slice(None), *(slice(2 * factor, -2 * factor),) * 3)
    np.testing.assert_allclose(ours[inner], tf_resized[inner], atol=1e-5)
    assert not np.allclose(ours, tf_resized, atol=1e-3)


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_upsampling_keeps_constants_at_the_borders(method: str) -> None:
    result = LAYERS[method](4)(np.full((1, 3, 4, 5, 2), 7.0, np.float32)).numpy()
    np.testing.assert_allclose(result, 7.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_upsampling_keeps_the_reduced_precision_dtype(method: str, dtype: str) -> None:
    x = _random((1, 4, 5, 6, 2), seed=3)
    result = LAYERS[method](2, dtype=dtype)(tf.constant(x, dtype=dtype))
    assert result.dtype == tf.as_dtype(dtype)
    np.testing.assert_allclose(tf.cast(result, tf.float32).numpy(), _reference_upsample(x, 2, method), atol=0.05)


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_upsampling_traces_once_for_unknown_spatial_sizes(method: str) -> None:
    layer = LAYERS[method](2)
    function = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, None, 2), tf.float32)])
    concrete = function.get_concrete_function()
    assert concrete.output_shapes.as_list() == [None, None, None, None, 2]
    for shape in [(1, 3, 4, 5, 2), (2, 6, 2, 3, 2)]:
        x = _random(shape, seed=sum(shape))
        np.testing.assert_allclose(concrete(tf.constant(x)).numpy(), _reference_upsample(x, 2, method), atol=2e-6)
    symbolic = layer(keras.Input((None, 6, None, 3)))
    assert tuple(symbolic.shape) == (None, None, 12, None, 3)


def test_upsampling_refuses_a_non_integer_factor() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        UpSampling3DLinear(1.5)


# ---------------------------------------------------------------------------------------------------------------
# U-Net


def test_unet_weights_are_contracting_then_expanding_with_zero_biases_and_he_kernels() -> None:
    unet = UNet3D(levels=3, filters=8, seed=5)
    out = unet(np.zeros((1, 8, 8, 8, 2), np.float32))
    assert tuple(out.shape) == (1, 8, 8, 8, 8)
    names = [w.path.split("/")[-2] + "/" + w.path.split("/")[-1] for w in unet.weights]
    blocks = [f"{part}{level}" for part in ("contracting", "expanding") for level in range(3)]
    assert names == [f"{block}_conv{conv}/{kind}" for block in blocks for conv in (0, 1) for kind in ("kernel", "bias")]
    shapes = [tuple(w.shape) for w in unet.weights[::2]]
    assert (
        shapes
        == [(3, 3, 3, 2, 8)] + [(3, 3, 3, 8, 8)] * 5 + [(3, 3, 3, 16, 8), (3, 3, 3, 8, 8)] * 2 + [(3, 3, 3, 8, 8)] * 2
    )
    assert all(not w.numpy().any() for w in unet.weights[1::2])
    big = UNet3D(levels=1, filters=64, seed=0)
    big.build((None, None, None, None, 64))
    kernel = big.weights[2].numpy()  # fan-in 27 * 64: He std sqrt(2 / fan_in) after truncation
    assert kernel.std() == pytest.approx(np.sqrt(2 / (27 * 64)), rel=0.03)
    assert np.abs(kernel).max() <= 2 * np.sqrt(2 / (27 * 64)) / 0.87962566 + 1e-6


def test_unet_l2_losses_dropout_and_valid_sizes() -> None:
    unet = UNet3D(levels=2, filters=4, l2_factor=0.5, dropout=0.5, seed=1)
    x = _random((1, 4, 6, 8, 1), seed=4)
    inference = unet(x, training=False).numpy()
    assert np.array_equal(inference, unet(x, training=False).numpy())
    assert not np.allclose(inference, unet(x, training=True).numpy())
    kernels = [w.numpy() for w in unet.weights[::2]]
    assert len(unet.losses) == 8
    assert float(sum(unet.losses)) == pytest.approx(0.5 * sum(float((k**2).sum()) for k in kernels), rel=1e-5)


def test_unet_matches_the_original_segmentation_subnet_shapes() -> None:
    """Stage 2 reuse: the local-appearance U-Net and the five spatial-configuration U-Nets of the original."""
    require_original_models()
    local = numbered_variable_keys(SEGMENTATION_CHECKPOINT, "local_appearance")
    unet = UNet3D(levels=5, filters=32)
    unet.build((None, None, None, None, 1))
    assert [tuple(w.shape) for w in unet.weights] == checkpoint_shapes(SEGMENTATION_CHECKPOINT, local)
    spatial = checkpoint_shapes(
        SEGMENTATION_CHECKPOINT, numbered_variable_keys(SEGMENTATION_CHECKPOINT, "spatial_configuration")
    )
    assert len(spatial) == 5 * 34
    for subnet, inputs in enumerate([4, 4, 4, 4, 5]):  # the background sub-net, created last, has 5 inputs
        unet = UNet3D(levels=4, filters=16)
        unet.build((None, None, None, None, inputs))
        assert [tuple(w.shape) for w in unet.weights] == spatial[34 * subnet : 34 * subnet + 32]
        assert spatial[34 * subnet + 32 : 34 * subnet + 34] == [(1, 1, 1, 16, 1), (1,)]


@pytest.mark.parametrize("precision", ["bfloat16"], indirect=True)
def test_bfloat16_convolution_of_a_two_voxel_deep_input_has_finite_gradients(precision: str) -> None:
    # The deepest U-Net level of a 32-slice input is 2 voxels deep; TensorFlow's bfloat16 CPU kernel gradient
    # returned non-finite values there in about a third of the draws, so 30 draws would all but surely meet one.
    rng = np.random.default_rng(0)
    conv = UNet3D(levels=1, filters=32, dropout=0.0).contracting[0][0]
    plain = keras.layers.Conv3D(32, 3, padding="same")
    for _ in range(30):
        x = tf.constant(rng.normal(size=(1, 2, 5, 5, 32)).astype(np.float32) * 0.1)
        with tf.GradientTape() as tape:
            y = conv(x)
        gradients = tape.gradient(y, conv.trainable_weights, output_gradients=tf.ones_like(y))
        assert y.dtype == tf.bfloat16
        assert all(np.isfinite(g.numpy()).all() for g in gradients)
    if not plain.built:
        plain.build(x.shape)
    plain.set_weights(conv.get_weights())
    deep = tf.constant(rng.normal(size=(1, 4, 5, 5, 32)).astype(np.float32) * 0.1)  # left to the bfloat16 kernel
    for tensor in (x, deep):
        expected = plain(tensor).numpy().astype(np.float32)
        np.testing.assert_allclose(conv(tensor).numpy().astype(np.float32), expected, atol=0.02, rtol=0.02)


# ---------------------------------------------------------------------------------------------------------------
# Localization network


def test_localization_net_has_the_original_parameter_count_and_float32_logits() -> None:
    model = build_localization_net(LocalizationNetConfig(seed=0))
    assert model.count_params() == 637_474
    assert len(model.weights) == 42 and len(model.losses) == 20
    for shape in [(1, 32, 48, 80), (2, 48, 32, 32)]:
        logits = model(np.zeros((*shape, 1), np.float32), training=False)
        assert logits.dtype == tf.float32 and tuple(logits.shape) == (*shape, 2)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"], indirect=True)
def test_localization_net_builds_and_runs_under_mixed_precision(precision: str) -> None:
    model = build_localization_net(LocalizationNetConfig(seed=0))
    unet = model.get_layer("unet")
    assert unet.compute_dtype == precision
    assert all(w.dtype == "float32" for w in model.weights)
    # TensorFlow has no float16 AvgPool3D kernel for the CPU; under XLA the float16 network runs there too.
    forward = tf.function(lambda image: model(image, training=False), jit_compile=precision == "float16")
    logits = forward(tf.constant(_random((1, 32, 32, 48, 1), seed=6)))
    assert logits.dtype == tf.float32 and tuple(logits.shape) == (1, 32, 32, 48, 2)
    assert np.isfinite(logits.numpy()).all() and logits.numpy().std() > 0


def test_localization_weight_shapes_equal_the_original_checkpoint_in_order() -> None:
    require_original_models()
    keys = numbered_variable_keys(LOCALIZATION_CHECKPOINT, "model")
    model = build_localization_net()
    assert [tuple(w.shape) for w in model.weights] == checkpoint_shapes(LOCALIZATION_CHECKPOINT, keys)


def test_loading_into_a_different_architecture_names_the_mismatch_and_assigns_nothing() -> None:
    require_original_models()
    model = build_localization_net(LocalizationNetConfig(filters=16, seed=0))
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ValueError, match=r"weight 0 \(unet/contracting0_conv0/kernel\) has shape \(3, 3, 3, 1, 16\)"):
        load_original_localization_weights(model, ORIGINAL_MODELS / "localization")
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights, strict=True))
    with pytest.raises(ValueError, match="42 weights but 1 arrays"):
        assign_weights_by_order(model.weights, [before[0]])


@pytest.fixture(scope="module")
def localization_pair() -> tuple:
    """The original's utils module, its localization model (XLA, float16 ch-first) and ours with its weights."""
    models = require_original_models()
    utils = tf.saved_model.load(str(models / "tf_utils_module"))
    loaded = tf.saved_model.load(str(models / "localization"))  # kept referenced: the signature needs its variables
    original = tf.function(
        lambda image: loaded.signatures["serving_default"](image=image)["output_0"], jit_compile=True
    )
    model = build_localization_net()
    load_original_localization_weights(model, models / "localization")
    ours = tf.function(lambda image: model(image, training=False))
    return utils, original, ours


def _original_localization_input(utils: object, path: Path) -> tf.Tensor:
    """The original inference's steps 2-4: LPS float16 ch-first CT, 6 mm (grown if too big), preprocess."""
    ct, _ = to_canonical(read_ct(path))
    image = sitk.GetArrayFromImage(ct).astype(np.float16)[None, None]
    spacing_xyz = np.array(spacing_with_fallback(ct.GetSpacing(), str(path)))
    ratio = np.max(np.ceil(np.array(ct.GetSize()) * spacing_xyz / 6.0) / [80, 80, 256]) + 0.02
    new_spacing = np.full(3, 6.0) * (ratio if ratio > 1 else 1.0)
    inputs, _ = utils.preprocess_for_localization(
        tf.constant(image),
        tf.constant(spacing_xyz[::-1], tf.float32),
        tf.constant(new_spacing[::-1], tf.float32),
        tf.constant(0.0),
        tf.constant(list(range(32, 257, 16)), tf.int32),  # the arguments named x, y, z pair with z, y, x
        tf.constant([32, 48, 64, 80], tf.int32),
        tf.constant([32, 48, 64, 80], tf.int32),
    )
    return inputs


@pytest.mark.parametrize(
    "case", ["ts_example_ct", "ts_example_ct_sm", "ts_example_ct_sm_oblique", "ts_example_ct_dicom"]
)  # two patients
def test_localization_mask_agrees_with_the_original_model(case: str, localization_pair: tuple) -> None:
    utils, original, ours = localization_pair
    inputs = _original_localization_input(utils, shared_case(case).image)
    assert inputs.dtype == tf.float16 and inputs.shape[1] == 1
    expected = original(inputs).numpy()[0, 0]
    logits = ours(tf.cast(tf.transpose(inputs, [0, 2, 3, 4, 1]), tf.float32)).numpy()[0]
    mask = logits[..., 1] > logits[..., 0]
    dice = 2 * np.logical_and(mask, expected).sum() / (mask.sum() + expected.sum())
    logger.info("%s: input %s, foreground %d voxels, Dice %.6f", case, inputs.shape, expected.sum(), dice)
    assert expected.sum() > 500  # the original finds the organs (874 voxels on the 20-slice DICOM slab)
    # on the foreground: 0.1 % of the voxels of all would hide a few % of the organs. On the DICOM slab's 874
    # voxels this allows one voxel to differ (one does: float32 here, float16 there)
    assert dice >= 0.999


# Keras 3.15 saving calls np.array on TF variables, which NumPy 2 flags; it is Keras's, not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_localization_net_round_trips_through_a_keras_file(tmp_path: Path) -> None:
    model = build_localization_net(LocalizationNetConfig(seed=3))
    model.save(tmp_path / "localization.keras")
    reloaded = keras.models.load_model(tmp_path / "localization.keras")
    x = _random((1, 32, 32, 32, 1), seed=7)
    assert [w.path for w in reloaded.weights] == [w.path for w in model.weights]
    np.testing.assert_allclose(reloaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)
