"""Stage 2 network: the SCN's size and weight order against the original's index, its outputs, modes and layers."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientscn.nn.config import SCNConfig
from efficientscn.nn.noise import SaltAndPepperNoise
from efficientscn.nn.scn import CombineLocalSpatial, SpatialConfiguration, build_scn, original_scn_variable_keys
from efficientscn.nn.weights import checkpoint_shapes

from helpers import ORIGINAL_MODELS, require_original_models

logger = logging.getLogger(__name__)

SEGMENTATION_CHECKPOINT = ORIGINAL_MODELS / "segmentation" / "variables" / "variables"
LOCAL_WEIGHTS = 42
"""The local-appearance U-Net's 40 weights and its head's kernel and bias come first."""


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
    require_original_models()
    checkpoint = SEGMENTATION_CHECKPOINT
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
    # docs/fidelity.md #8: the sub-nets of labels 1..4 come first; the background's, with 5 inputs, is created last.
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
    # the items differ, so one item's sum cannot serve both: each is normalised by its own (docs/fidelity.md #14)
    assert abs(sums[0].mean() - sums[1].mean()) > 1e-3


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


def _pass_through(weights: list, levels: int, slot: int, gains, biases) -> None:
    """Hand-set one U-Net and its 1x1x1 head, given in checkpoint order, to head = gains * input[slot] + biases.

    Every weight is zeroed but the centre taps that carry input channel `slot` as filter 0 through both convolutions
    of contracting level 0 and, as the skip (the first half of the concatenation), through expanding level 0; the
    leaky ReLUs pass it unchanged where it is not negative. Weight order: contracting levels 0..L-1, expanding
    levels 0..L-1 (two convolutions of kernel and bias each), then the head's kernel and bias.
    """
    for weight in weights:
        weight.assign(np.zeros(weight.shape, np.float32))

    def centre_tap(kernel, source: int) -> None:
        value = np.zeros(kernel.shape, np.float32)
        value[1, 1, 1, source, 0] = 1.0
        kernel.assign(value)

    expanding = 4 * levels
    for index, source in ((0, slot), (2, 0), (expanding, 0), (expanding + 2, 0)):
        centre_tap(weights[index], source)
    head_kernel = np.zeros(weights[8 * levels].shape, np.float32)
    head_kernel[0, 0, 0, 0, :] = gains
    weights[8 * levels].assign(head_kernel)
    weights[8 * levels + 1].assign(np.asarray(biases, np.float32) * np.ones(weights[8 * levels + 1].shape, np.float32))


def test_assembled_scn_pools_by_4_routes_each_label_upsamples_cubically_and_combines_by_entropy() -> None:
    """Hand-set weights in the original's checkpoint order give a known answer for every wiring step.

    The image is 0.1 + 0.001 z^2 along z. The local part passes it through: local logit c = g_c * image + b_c.
    Average pooling by 4 turns z^2 into (block centre)^2 + 1.25 (the variance of 4 neighbours; pooling by 2 would
    add 0.25), and Keys cubic upsampling by 4 reproduces a quadratic exactly away from the border (linear would not),
    so a sub-net passing the image gives a * (0.1 + 0.001 (z^2 + 1.25)) + beta. A sub-net passing a probability
    channel gives a * sigmoid(b_c) + beta, which tells which channel reached it.
    """
    model = build_scn(SCNConfig(seed=0))
    z = np.arange(32, dtype=np.float64)
    image = np.broadcast_to((0.1 + 0.001 * z**2)[None, :, None, None, None], (1, 32, 32, 32, 1)).astype(np.float32)
    model(image, training=False)  # built
    local_gains, local_biases = np.array([2.0, 0, 0, 0, 0]), np.array([0.5, -1.0, 0.0, 1.0, 2.0])
    _pass_through(model.weights[:LOCAL_WEIGHTS], 5, 0, local_gains, local_biases)
    # the original's sub-net blocks in checkpoint order serve labels 1, 2, 3, 4, then the background; their inputs
    # are [image, foreground probabilities 1..4 without the sub-net's own label]
    subnets = {  # label: (block, input slot, gain, bias)
        1: (0, 0, 5.0, 0.1),  # slot 0: the image
        2: (1, 1, 4.0, 0.0),  # inputs [image, 1, 3, 4]: slot 1 is probability 1
        3: (2, 3, 2.0, -1.0),  # inputs [image, 1, 2, 4]: slot 3 is probability 4
        4: (3, 2, -3.0, 0.5),  # inputs [image, 1, 2, 3]: slot 2 is probability 2
        0: (4, 0, 3.0, -0.2),  # the background's, inputs [image, 1, 2, 3, 4]: slot 0, the image
    }
    for block, slot, gain, bias in subnets.values():
        start = LOCAL_WEIGHTS + 34 * block
        _pass_through(model.weights[start : start + 34], 4, slot, [gain], [bias])
    outputs = {name: t.numpy()[0, :, 0, 0].astype(np.float64) for name, t in model(image, training=False).items()}

    ct = 0.1 + 0.001 * z**2
    local = local_gains * ct[:, None] + local_biases
    np.testing.assert_allclose(outputs["local_logits"], local, atol=1e-5)
    probability = _sigmoid(local_biases)  # channels 1..4 are constant
    pooled_and_upsampled = 0.1 + 0.001 * (z**2 + 1.25)
    spatial = np.stack(
        [
            3.0 * pooled_and_upsampled - 0.2,
            5.0 * pooled_and_upsampled + 0.1,
            np.full(32, 4.0 * probability[1]),
            np.full(32, 2.0 * probability[4] - 1.0),
            np.full(32, -3.0 * probability[2] + 0.5),
        ],
        axis=-1,
    )
    interior = slice(8, 24)  # all four cubic taps inside the 8 pooled voxels
    np.testing.assert_allclose(outputs["spatial_logits"][interior], spatial[interior], atol=1e-5)
    np.testing.assert_allclose(outputs["spatial_logits"][:, 2:], spatial[:, 2:], atol=1e-5)  # constants everywhere
    # the combination: local where the spatial part is unsure, spatial where it is sure, then normalised
    local_p, spatial_p = _sigmoid(local), _sigmoid(spatial)
    entropy = -(spatial_p * np.log2(spatial_p) + (1 - spatial_p) * np.log2(1 - spatial_p))
    combined = local_p * entropy + spatial_p * (1 - entropy)
    expected = combined / (combined.sum(axis=-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(outputs["probabilities"][interior], expected[interior], atol=1e-5)


def test_channel_dropout_twice_keeps_probabilities_with_0_5625_and_a_kept_image_doubles() -> None:
    """The spatial part in training, noise and U-Net dropout off, every sub-net passing one input through: each
    foreground probability is kept with probability 0.75^2 and scaled by 1 / 0.75^2 (the original's dropout of
    0.25 applied twice), the pooled image is kept with probability 0.5 and doubled; 800 and 200 draws."""
    keras.utils.set_random_seed(7)  # the dropout masks too: the bounds below are 3 standard deviations wide
    layer = SpatialConfiguration(dropout_rate=0.0, salt_pepper_rate=0.0, seed=1)
    items = 100
    probabilities = np.full((items, 32, 32, 32, 5), 0.5, np.float32)
    image = np.full((items, 32, 32, 32, 1), 0.5, np.float32)
    layer([probabilities[:1], image[:1]], training=False)  # built
    # label: (block, slot) passing image, probability 2, probability 1, probability 4, probability 3
    for block, slot in ((4, 0), (0, 1), (1, 1), (2, 3), (3, 3)):
        _pass_through(layer.weights[34 * block : 34 * (block + 1)], 4, slot, [1.0], [0.0])
    values = np.concatenate([layer([probabilities, image], training=True).numpy()[:, 16, 16, 16] for _ in range(2)])
    kept_probabilities, kept_image = values[:, 1:] > 0, values[:, 0] > 0
    np.testing.assert_allclose(values[:, 1:][kept_probabilities], 0.5 / 0.75**2, rtol=1e-5)
    np.testing.assert_allclose(values[:, 0][kept_image], 1.0, rtol=1e-5)
    assert np.all(values[~kept_image, 0] == 0) and np.all(values[:, 1:][~kept_probabilities] == 0)
    # 800 draws: 3.4 standard deviations; one mask shared by the batch (the original's) would give k / 8, none of
    # which is this close (docs/fidelity.md #16)
    assert kept_probabilities.mean() == pytest.approx(0.5625, abs=0.06)
    assert kept_image.mean() == pytest.approx(0.5, abs=0.11)  # 200 draws: 3.1 standard deviations
    # without training, nothing is dropped or scaled
    quiet = layer([probabilities[:2], image[:2]], training=False).numpy()[:, 16, 16, 16]
    np.testing.assert_allclose(quiet, [[0.5, 0.5, 0.5, 0.5, 0.5]] * 2, rtol=1e-5)


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


@pytest.mark.parametrize("precision", ["bfloat16"], indirect=True)
def test_scn_runs_under_mixed_bfloat16_with_float32_outputs(precision: str, batch: np.ndarray) -> None:
    model = build_scn(SCNConfig(seed=0))
    assert model.get_layer("spatial_configuration").compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    x = batch[:1, :, :32]
    for training in (False, True):
        outputs = model(x, training=training)
        assert all(t.dtype == tf.float32 and tuple(t.shape) == (1, 32, 32, 32, 5) for t in outputs.values())
        assert np.isfinite(outputs["probabilities"].numpy()).all()
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("precision", ["float16"], indirect=True)
def test_scn_builds_under_mixed_float16_with_float32_outputs(precision: str) -> None:
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
