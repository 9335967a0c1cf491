"""Stage 2 network: the SCN's size and weight order against the original's index, its outputs, modes and layers."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from efficientscn.nn import (
    CombineLocalSpatial,
    SaltAndPepperNoise,
    SCNConfig,
    SpatialConfiguration,
    build_scn,
    checkpoint_shapes,
    original_scn_variable_keys,
)

logger = logging.getLogger(__name__)

SEGMENTATION_CHECKPOINT = (
    REPO_ROOT.parent / "shared" / "reference" / "original_saved_models" / "segmentation" / "variables" / "variables"
)
LOCAL_WEIGHTS = 42
"""The local-appearance U-Net's 40 weights and its head's kernel and bias come first."""


def require_segmentation_index() -> Path:
    """The original segmentation checkpoint prefix (only its .index exists); skips if missing, fails under CI."""
    if not SEGMENTATION_CHECKPOINT.with_suffix(".index").is_file():
        message = f"original segmentation variables.index not found at {SEGMENTATION_CHECKPOINT.parent}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SEGMENTATION_CHECKPOINT


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return build_scn(SCNConfig(seed=0))


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """Two different CT-like items (N=2, z=32, y=64, x=32, 1) in [-1, 1]: noise, and a smooth ramp."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, (32, 64, 32, 1))
    ramp = np.broadcast_to(np.linspace(-0.5, 1.0, 64)[None, :, None, None], noise.shape)
    return np.stack([noise, ramp]).astype(np.float32)


@pytest.fixture
def dtype_policy(request: pytest.FixtureRequest) -> Iterator[str]:
    """Sets the Keras global dtype policy named by the parameter for one test, then restores float32."""
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _combined(local_logits: np.ndarray, spatial_logits: np.ndarray) -> np.ndarray:
    """The unnormalised combination in float64: local * H(spatial) + spatial * (1 - H(spatial)), H in bits."""
    local, spatial = _sigmoid(local_logits.astype(np.float64)), _sigmoid(spatial_logits.astype(np.float64))
    entropy = -(spatial * np.log2(spatial) + (1 - spatial) * np.log2(1 - spatial))
    return local * entropy + spatial * (1 - entropy)


def test_parameter_count_and_l2_on_unet_kernels_only(model: keras.Model) -> None:
    assert model.count_params() == 1_270_090
    assert len(model.weights) == 40 + 2 + 5 * 34
    assert len(model.losses) == 20 + 5 * 16  # one per U-Net convolution; the six heads are not regularised


def test_weight_shapes_equal_the_original_index_in_order(model: keras.Model) -> None:
    checkpoint = require_segmentation_index()
    keys = original_scn_variable_keys(checkpoint)  # reads names and shapes from the .index, without a data file
    expected = checkpoint_shapes(checkpoint, keys)
    assert len(keys) == len(model.weights) == 212
    for index, (weight, key, shape) in enumerate(zip(model.weights, keys, expected, strict=True)):
        assert tuple(weight.shape) == shape, f"weight {index} {weight.path} {tuple(weight.shape)} vs {key} {shape}"
    assert keys[0] == "local_appearance/variables/0/.ATTRIBUTES/VARIABLE_VALUE"
    assert keys[LOCAL_WEIGHTS - 2 : LOCAL_WEIGHTS + 1] == [
        "local_appearance/prediction/kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "local_appearance/prediction/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "spatial_configuration/variables/0/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    assert keys[-1] == "spatial_configuration/variables/169/.ATTRIBUTES/VARIABLE_VALUE"
    # Quirk 6: the sub-nets of labels 1..4 come first; the background's, with 5 input channels, is created last.
    firsts = [model.weights[LOCAL_WEIGHTS + 34 * i] for i in range(5)]
    assert [w.path.split("/")[1] for w in firsts] == ["label1", "label2", "label3", "label4", "label0"]
    assert [w.shape[3] for w in firsts] == [4, 4, 4, 4, 5] == [expected[LOCAL_WEIGHTS + 34 * i][3] for i in range(5)]


def test_outputs_are_float32_and_probabilities_sum_to_one_for_a_batch_of_two(
    model: keras.Model, batch: np.ndarray
) -> None:
    outputs = model(batch, training=False)
    assert sorted(outputs) == ["local_logits", "probabilities", "spatial_logits"]
    for name, tensor in outputs.items():
        assert tensor.dtype == tf.float32 and tuple(tensor.shape) == (2, 32, 64, 32, 5), name
    probabilities = outputs["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    assert np.all(probabilities >= 0)
    combined = _combined(outputs["local_logits"].numpy(), outputs["spatial_logits"].numpy())
    np.testing.assert_allclose(probabilities, combined / combined.sum(axis=-1, keepdims=True), atol=1e-5)
    sums = combined.sum(axis=-1)
    assert abs(sums[0].mean() - sums[1].mean()) > 1e-3  # the items differ, so one item's sum cannot serve both
    # Quirk 7: the original's normalisation (channels-first, sum without keepdims) cannot even broadcast here.
    channels_first = np.moveaxis(combined, -1, 1)
    with pytest.raises(ValueError, match="broadcast"):
        _ = channels_first / (channels_first.sum(axis=1) + 1e-8)


def test_inference_is_deterministic_and_training_is_not(model: keras.Model, batch: np.ndarray) -> None:
    first, second = model(batch, training=False), model(batch, training=False)
    for name in first:
        np.testing.assert_array_equal(first[name].numpy(), second[name].numpy())
    trained = model(batch, training=True)
    assert not np.allclose(trained["spatial_logits"].numpy(), first["spatial_logits"].numpy(), atol=1e-3)
    # Without U-Net dropout the local part is deterministic in training too; the spatial part still is not
    # (salt-and-pepper noise, channel dropout, image dropout).
    quiet = build_scn(SCNConfig(seed=0, dropout_rate=0.0))
    x = batch[:1, :, :32]
    one, two = quiet(x, training=True), quiet(x, training=True)
    np.testing.assert_array_equal(one["local_logits"].numpy(), two["local_logits"].numpy())
    assert not np.allclose(one["spatial_logits"].numpy(), two["spatial_logits"].numpy(), atol=1e-3)


def test_spatial_logits_do_not_train_the_local_appearance(model: keras.Model, batch: np.ndarray) -> None:
    x = tf.constant(batch[1:, :, :32])
    with tf.GradientTape(persistent=True) as tape:
        outputs = model(x, training=False)
        spatial = tf.reduce_sum(outputs["spatial_logits"])
        local = tf.reduce_sum(outputs["local_logits"])
    spatial_gradients = tape.gradient(spatial, model.trainable_weights)
    local_gradients = tape.gradient(local, model.trainable_weights[:LOCAL_WEIGHTS])
    assert all(g is None for g in spatial_gradients[:LOCAL_WEIGHTS])
    assert all(g is not None and np.any(g.numpy()) for g in spatial_gradients[LOCAL_WEIGHTS::2])  # SC kernels
    assert all(g is not None for g in local_gradients)


def test_each_spatial_subnet_sees_the_image_then_the_other_foreground_channels_in_label_order() -> None:
    layer = SpatialConfiguration(seed=5)
    rng = np.random.default_rng(3)
    # Batch item 0 is the base; item 1 has the image changed, item 2 + c the probability channel c (per-item maths).
    sources = ["image", 0, 1, 2, 3, 4]
    probabilities = np.repeat(rng.uniform(0, 1, (1, 32, 32, 32, 5)), 1 + len(sources), axis=0).astype(np.float32)
    image = np.repeat(rng.uniform(-1, 1, (1, 32, 32, 32, 1)), 1 + len(sources), axis=0).astype(np.float32)
    image[1] = -image[1]
    for channel in range(5):
        probabilities[2 + channel, ..., channel] = 1 - probabilities[2 + channel, ..., channel]
    layer([probabilities, image], training=False)
    # Input slot k of label L's sub-net should carry: slot 0 the image, then the foreground probabilities but L's.
    slots = {label: ["image", *(c for c in range(1, 5) if c != label)] for label in range(5)}
    first_convs = {
        label: net.layers[0].contracting[0][0] for label, net in zip(layer.subnet_labels, layer.subnets, strict=True)
    }
    kernels = {label: conv.kernel.numpy() for label, conv in first_convs.items()}
    for slot in range(5):  # keep only the first convolution's kernel slice for input `slot`, in every sub-net
        for label, conv in first_convs.items():
            conv.kernel.assign(kernels[label] * (np.arange(kernels[label].shape[3]) == slot)[:, None])
        outputs = layer([probabilities, image], training=False).numpy()
        change = np.abs(outputs[1:] - outputs[:1]).max(axis=(1, 2, 3))  # (source, label); real responses are > 1e-3
        for item, source in enumerate(sources):
            responding = {label for label in range(5) if change[item, label] > 1e-5}
            expected = {label for label in range(5) if slot < len(slots[label]) and slots[label][slot] == source}
            assert responding == expected, f"slot {slot}, changed input {source}"


def test_sizes_that_are_not_multiples_of_32_are_refused(model: keras.Model) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        model(np.zeros((1, 48, 32, 32, 1), np.float32), training=False)


def test_combination_follows_the_confident_spatial_part_and_else_the_local_part() -> None:
    rng = np.random.default_rng(1)
    local_logits = rng.normal(size=(2, 2, 3, 4, 5)).astype(np.float32)
    combine = CombineLocalSpatial(epsilon=1e-5)
    # Spatial logits 0: probability 0.5, entropy 1 bit, so the local part decides alone.
    uncertain = combine([local_logits, np.zeros_like(local_logits)]).numpy()
    local = _sigmoid(local_logits)
    np.testing.assert_allclose(uncertain, local / (local.sum(axis=-1, keepdims=True) + 1e-5), atol=1e-6)
    # Spatial logits +-100: entropy 0 without overflow, so the spatial part's one-hot decides.
    confident_logits = np.where(np.arange(5) == 2, 100.0, -100.0) * np.ones_like(local_logits)
    confident = combine([local_logits, confident_logits.astype(np.float32)]).numpy()
    assert combine.compute_dtype == "float32" and np.isfinite(confident).all()
    np.testing.assert_allclose(confident, np.eye(5)[2] * np.ones_like(local_logits), atol=1e-5)


def test_salt_and_pepper_noise() -> None:
    x = np.random.default_rng(2).uniform(0.05, 0.95, (2, 32, 32, 32, 5)).astype(np.float32)
    fine = SaltAndPepperNoise(rate=0.01, scales=(1,), seed=3)
    np.testing.assert_array_equal(fine(x, training=False).numpy(), x)
    noisy = fine(x, training=True).numpy()
    changed = np.abs(noisy - x) > 1e-6  # 1 - (1 - x) rounds x by an ulp where nothing is marked
    assert changed.mean() == pytest.approx(0.01, rel=0.15)
    assert set(np.unique(noisy[changed])) == {0.0, 1.0}
    assert (noisy[changed] == 0).mean() == pytest.approx(0.5, abs=0.1)
    # All scales, on sizes the coarse grids do not divide: soft blobs, more values changed, still in [0, 1].
    x = x[:, :, :28, :20]
    multi = SaltAndPepperNoise(rate=0.01, scales=(1, 2, 4, 8), seed=4)(x, training=True).numpy()
    assert multi.shape == x.shape and multi.min() >= 0 and multi.max() <= 1
    changed = np.abs(multi - x) > 1e-6
    assert changed.mean() > 0.03
    assert np.mean((multi[changed] != 0) & (multi[changed] != 1)) > 0.5


def test_salt_and_pepper_pulls_towards_one_then_towards_zero_as_the_original() -> None:
    class KnownMasks(SaltAndPepperNoise):
        def _masks(self, shape, scale, dtype):  # pepper p = 0.5, salt q = 0.5 everywhere: overlapping soft edges
            return tf.fill(shape, tf.constant(0.5, dtype)), tf.fill(shape, tf.constant(0.5, dtype))

    x = np.full((1, 2, 2, 2, 1), 0.5, np.float32)
    # salt first: 1 - (1 - 0.5)(1 - 0.5) = 0.75, then pepper: 0.75 (1 - 0.5) = 0.375 (pepper first would give 0.625)
    noisy = KnownMasks(rate=0.01, scales=(1,))(x, training=True).numpy()
    np.testing.assert_allclose(noisy, 0.375, rtol=1e-6)


@pytest.mark.parametrize("dtype_policy", ["mixed_bfloat16"], indirect=True)
def test_scn_runs_under_mixed_bfloat16_with_float32_outputs(dtype_policy: str, batch: np.ndarray) -> None:
    model = build_scn(SCNConfig(seed=0))
    assert model.get_layer("spatial_configuration").compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    x = batch[:1, :, :32]
    for training in (False, True):
        outputs = model(x, training=training)
        assert all(t.dtype == tf.float32 and tuple(t.shape) == (1, 32, 32, 32, 5) for t in outputs.values())
        assert np.isfinite(outputs["probabilities"].numpy()).all()
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("dtype_policy", ["mixed_float16"], indirect=True)
def test_scn_builds_under_mixed_float16_with_float32_outputs(dtype_policy: str) -> None:
    # Built only: TensorFlow has no float16 AvgPool3D kernel for the CPU (the original ran it on a GPU).
    model = build_scn(SCNConfig(seed=0))
    assert model.get_layer("local_appearance").compute_dtype == "float16"
    # the local-appearance sigmoid is computed in float32, as the original's float32 activation layer
    assert model.get_layer("local_probabilities").compute_dtype == "float32"
    assert model.count_params() == 1_270_090
    outputs = model(keras.Input((32, 32, 32, 1)))  # symbolic: nothing runs
    assert {name: t.dtype for name, t in outputs.items()} == dict.fromkeys(outputs, "float32")


# Keras 3.15 saving calls np.array on TF variables, which NumPy 2 flags; it is Keras's, not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_scn_round_trips_through_a_keras_file(model: keras.Model, batch: np.ndarray, tmp_path: Path) -> None:
    model.save(tmp_path / "scn.keras")
    reloaded = keras.models.load_model(tmp_path / "scn.keras")
    assert [w.path for w in reloaded.weights] == [w.path for w in model.weights]
    x = batch[:1, :, :32]
    expected, actual = model(x, training=False), reloaded(x, training=False)
    for name in expected:
        np.testing.assert_allclose(actual[name].numpy(), expected[name].numpy(), atol=1e-6)
