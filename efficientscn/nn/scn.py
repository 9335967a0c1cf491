"""Stage 2: the SpatialConfiguration-Net (SCN) segmenting background, liver, kidney, spleen and pancreas at 2 mm.

Input (N, z, y, x, 1) channels-last, the CT intensities /2048 clamped to [-1, 1]; z, y and x must be multiples of
32 (the stage-2 valid sizes are). Output: a dict of three (N, z, y, x, 5) float32 tensors, channels in label order
0..4 under any Keras dtype policy:
- "probabilities": the combined probabilities, normalised to sum 1 over the channels (what the export returns);
- "local_logits": the local-appearance logits (the loss's first sigmoid cross-entropy);
- "spatial_logits": the spatial-configuration logits (the loss's second sigmoid cross-entropy).

Weights, in the original's checkpoint order: the local-appearance U-Net and its 1x1x1 head "prediction", then the
five spatial-configuration sub-nets (U-Net and 1x1x1 head each) for labels 1, 2, 3, 4 and last the background.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from efficientscn.nn.config import SCNConfig
from efficientscn.nn.noise import SaltAndPepperNoise
from efficientscn.nn.slabs import (
    LEVELS_BY_SLABS,
    LevelHalos,
    joined,
    slab_levels,
    slabs_for_budget,
    slices_first,
    unet_level_by_slabs,
    upsampled_slices,
)
from efficientscn.nn.unet import UNet3D
from efficientscn.nn.upsample import UpSampling3DCubic
from efficientscn.nn.weights import VALUE_SUFFIX, numbered_variable_keys

LOCAL_SCOPE = "local_appearance"
SPATIAL_SCOPE = "spatial_configuration"
"""Where the original's segmentation SavedModel keeps the two parts' weights."""

SEED_STRIDE = 100
"""Distance between the initialiser seeds of the local-appearance net and of each spatial sub-net."""


def _offset(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


@keras.saving.register_keras_serializable(package="efficientscn")
class SpatialConfiguration(keras.layers.Layer):
    """[LA probabilities (N, z, y, x, C), image (N, z, y, x, 1)] -> SC logits (N, z, y, x, C), compute dtype.

    The probabilities pass a stop-gradient (the loss of the spatial part does not train the local part), both
    inputs are average-pooled by `downsample_factor`; in training the probabilities get salt-and-pepper noise and
    `channel_dropout_passes` whole-channel dropouts, the image a whole-channel dropout (Keras dropout: kept
    values are scaled by 1/(1 - rate)). Label i's sub-net (U-Net + 1x1x1 conv to one logit) sees
    [image, probability channels 1..C-1 except i]; the C logits, in label order, are upsampled back (Keys cubic).
    """

    def __init__(
        self,
        num_labels: int = 5,
        levels: int = 4,
        filters: int = 16,
        convs_per_block: int = 2,
        negative_slope: float = 0.1,
        dropout_rate: float = 0.1,
        downsample_factor: int = 4,
        salt_pepper_rate: float = 0.01,
        salt_pepper_scales: Sequence[int] = (1, 2, 4, 8),
        channel_dropout_rate: float = 0.25,
        channel_dropout_passes: int = 2,
        image_dropout_rate: float = 0.5,
        l2_factor: float = 1.0,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_labels < 2:
            raise ValueError(f"the spatial configuration needs a background and a foreground label, got {num_labels}")
        self.num_labels = num_labels
        self.levels = levels
        self.filters = filters
        self.convs_per_block = convs_per_block
        self.negative_slope = negative_slope
        self.dropout_rate = dropout_rate
        self.downsample_factor = downsample_factor
        self.salt_pepper_rate = salt_pepper_rate
        self.salt_pepper_scales = tuple(salt_pepper_scales)
        self.channel_dropout_rate = channel_dropout_rate
        self.channel_dropout_passes = channel_dropout_passes
        self.image_dropout_rate = image_dropout_rate
        self.l2_factor = l2_factor
        self.seed = seed
        self.size_multiple = downsample_factor * 2 ** (levels - 1)
        self.downsample = keras.layers.AveragePooling3D(downsample_factor, strides=downsample_factor, name="downsample")
        self.noise = SaltAndPepperNoise(salt_pepper_rate, salt_pepper_scales, name="salt_and_pepper")
        # docs/fidelity.md #7: the original applies its 0.25 channel dropout twice in training (keep probability
        # 0.5625, kept channels scaled by 1/0.5625). We keep that by default, since the published weights were
        # trained so, and make it explicit here: `channel_dropout_passes` independent whole-channel dropouts; 1
        # gives the evident intent of a single dropout.
        self.channel_dropouts = [
            keras.layers.SpatialDropout3D(channel_dropout_rate, name=f"channel_dropout{i}")
            for i in range(channel_dropout_passes)
        ]
        # docs/fidelity.md #7, kept as the original: Keras dropout scales a kept image by 1 / (1 - 0.5) = 2.
        self.image_dropout = keras.layers.SpatialDropout3D(image_dropout_rate, name="image_dropout")
        # docs/fidelity.md #8: creation order is weight order, and the original created the sub-nets of labels
        # 1..C-1 first and the background's (all foreground channels as inputs) last; we create them in that order.
        self.subnet_labels = [*range(1, num_labels), 0]
        self.subnets = [self._subnet(label, index) for index, label in enumerate(self.subnet_labels)]
        self.upsample = UpSampling3DCubic(downsample_factor, name="upsample")

    def _subnet(self, label: int, index: int) -> keras.Sequential:
        """Label `label`'s U-Net and 1x1x1 head (not regularised) as one container, its weights in that order."""
        seed = _offset(self.seed, SEED_STRIDE * index)
        unet = UNet3D(
            levels=self.levels,
            filters=self.filters,
            convs_per_block=self.convs_per_block,
            activation="leaky_relu",
            negative_slope=self.negative_slope,
            dropout=self.dropout_rate,
            upsampling="linear",
            l2_factor=self.l2_factor,
            seed=seed,
            name="unet",
        )
        return keras.Sequential([unet, unet.prediction_head(1)], name=f"label{label}")

    def build(self, input_shape: Sequence[tuple]) -> None:
        """Build the sub-nets in creation order; label i's input has 1 + (C - 1) - (i > 0) channels."""
        for label, subnet in zip(self.subnet_labels, self.subnets, strict=True):
            channels = self.num_labels - (1 if label > 0 else 0)
            subnet.build((None, None, None, None, channels))

    def call(self, inputs: Sequence[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        probabilities, image = inputs
        sizes = [s for s in image.shape[1:4] if s is not None]
        if any(s % self.size_multiple for s in sizes):
            raise ValueError(f"the spatial sizes must be multiples of {self.size_multiple}, got {image.shape[1:4]}")
        probabilities = self.downsample(tf.stop_gradient(probabilities))
        probabilities = self.noise(probabilities, training=training)
        for dropout in self.channel_dropouts:
            probabilities = dropout(probabilities, training=training)
        image = self.image_dropout(self.downsample(image), training=training)
        return self.upsample(self.coarse_logits(probabilities, image, training=training))

    def coarse_logits(self, probabilities: tf.Tensor, image: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """The sub-nets' logits (N, z, y, x, C) in label order at the pooled resolution, from the pooled (and in
        training perturbed) probabilities and image; `call` upsamples them."""
        logits = {}
        for label, subnet in zip(self.subnet_labels, self.subnets, strict=True):
            others = [probabilities[..., c : c + 1] for c in range(1, self.num_labels) if c != label]
            logits[label] = subnet(tf.concat([image, *others], axis=-1), training=training)
        return tf.concat([logits[label] for label in range(self.num_labels)], axis=-1)

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        return (*input_shape[1][:-1], self.num_labels)

    def get_config(self) -> dict:
        names = [
            "num_labels", "levels", "filters", "convs_per_block", "negative_slope", "dropout_rate", "downsample_factor",
            "salt_pepper_rate", "salt_pepper_scales", "channel_dropout_rate", "channel_dropout_passes",
            "image_dropout_rate", "l2_factor", "seed",
        ]  # fmt: skip
        return {**super().get_config(), **{name: getattr(self, name) for name in names}}


@keras.saving.register_keras_serializable(package="efficientscn")
class CombineLocalSpatial(keras.layers.Layer):
    """[local logits, spatial logits], both (N, z, y, x, C) -> normalised combined probabilities (N, z, y, x, C).

    With local = sigmoid(local logits), spatial = sigmoid(spatial logits) and u the binary entropy of spatial in
    bits (in [0, 1], from the logits without overflow): combined = local * u + spatial * (1 - u), where the
    spatial part is confident it decides. Each channel is then divided by (sum over the C channels + epsilon).
    Computed in this layer's dtype (float32 unless given otherwise).
    """

    def __init__(self, epsilon: float = 1e-8, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        local_logits, spatial_logits = inputs
        local, spatial = tf.sigmoid(local_logits), tf.sigmoid(spatial_logits)
        # H(p) = BCE(labels=p, logits=s) with p = sigmoid(s): max(s, 0) - s p + log(1 + exp(-|s|)), stable for any s.
        uncertainty = tf.nn.sigmoid_cross_entropy_with_logits(labels=spatial, logits=spatial_logits) / math.log(2.0)
        combined = local * uncertainty + spatial * (1 - uncertainty)
        # docs/fidelity.md #14: the original summed without keepdims ([N, C, z, y, x] / [N, z, y, x]), which broadcasts
        # right only for batch 1; keepdims normalises every batch item by its own sum, for any batch size.
        return combined / (tf.reduce_sum(combined, axis=-1, keepdims=True) + self.epsilon)

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


def build_scn(config: SCNConfig | None = None) -> keras.Model:
    """The SCN: image (N, z, y, x, 1) -> {"probabilities", "local_logits", "spatial_logits"}, each (N, z, y, x, C).

    Built in the current Keras dtype policy (float32, mixed_float16 or mixed_bfloat16): the networks run in its
    compute dtype, the logits are cast to float32 and the combination is computed in float32. `training=True`
    activates dropout, salt-and-pepper noise and channel dropout; the outputs are the same in both modes.
    """
    config = config or SCNConfig()
    image = keras.Input(shape=(None, None, None, 1), name="image")
    local_unet = UNet3D(
        levels=config.local_levels,
        filters=config.local_filters,
        convs_per_block=config.convs_per_block,
        activation="leaky_relu",
        negative_slope=config.leaky_relu_alpha,
        dropout=config.dropout_rate,
        upsampling="linear",
        l2_factor=config.l2_factor,
        seed=config.seed,
        name=LOCAL_SCOPE,
    )
    local = local_unet.prediction_head(config.num_labels)(local_unet(image))
    local_probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="local_probabilities")(local)
    spatial = SpatialConfiguration(
        num_labels=config.num_labels,
        levels=config.spatial_levels,
        filters=config.spatial_filters,
        convs_per_block=config.convs_per_block,
        negative_slope=config.leaky_relu_alpha,
        dropout_rate=config.dropout_rate,
        downsample_factor=config.spatial_downsample_factor,
        salt_pepper_rate=config.salt_pepper_rate,
        salt_pepper_scales=config.salt_pepper_scales_voxels,
        channel_dropout_rate=config.channel_dropout_rate,
        channel_dropout_passes=config.channel_dropout_passes,
        image_dropout_rate=config.image_dropout_rate,
        l2_factor=config.l2_factor,
        seed=_offset(config.seed, SEED_STRIDE),
        name=SPATIAL_SCOPE,
    )([local_probabilities, image])
    local_logits = keras.layers.Activation("linear", dtype="float32", name="local_logits")(local)
    spatial_logits = keras.layers.Activation("linear", dtype="float32", name="spatial_logits")(spatial)
    probabilities = CombineLocalSpatial(config.normalisation_epsilon, name="probabilities")(
        [local_logits, spatial_logits]
    )
    outputs = {"probabilities": probabilities, "local_logits": local_logits, "spatial_logits": spatial_logits}
    return keras.Model(image, outputs, name="scn")


def scn_probabilities_by_slabs(
    model: keras.Model,
    image: tf.Tensor,
    budget_bytes: int,
    finish: Callable[[tf.Tensor], tf.Tensor],
    finished_dtype: tf.DType,
    levels_by_slabs: int = LEVELS_BY_SLABS,
    halos: Sequence[LevelHalos] | None = None,
) -> tf.TensorArray:
    """`build_scn`'s "probabilities" of `image` (N, z, y, x, 1), computed by z-slabs (`efficientscn.nn.slabs`) and
    passed slab by slab through `finish`, which must put the slab's slices first and give `finished_dtype`; the
    TensorArray holds slab i at i.

    The local-appearance U-Net's upper `levels_by_slabs` levels run by slabs of a depth fitting `budget_bytes`; each
    slab's head gives its local logits (kept) and its pooled probabilities, which, put together, go whole through
    the spatial-configuration sub-nets at a quarter of the resolution; then each slab's spatial logits are upsampled
    from those around it and combined with its local logits. Inference only (no noise, no dropout); the values are
    the whole network's, bit for bit on the CPUs tested. `halos`: see `unet_level_by_slabs`.
    """
    local_unet = model.get_layer(LOCAL_SCOPE)
    head = model.get_layer("prediction")
    local_probabilities = model.get_layer("local_probabilities")
    local_logits, spatial_logits = model.get_layer("local_logits"), model.get_layer("spatial_logits")
    spatial = model.get_layer(SPATIAL_SCOPE)
    combine = model.get_layer("probabilities")
    x = tf.cast(image, local_unet.compute_dtype)
    levels_by_slabs = slab_levels(local_unet, levels_by_slabs)
    multiple = math.lcm(2**levels_by_slabs, spatial.downsample_factor)  # slabs pool on both parts' grids
    slabs = slabs_for_budget(local_unet, x, budget_bytes, multiple, levels_by_slabs)

    def local_part(features: tf.Tensor) -> list[tf.Tensor]:
        logits = head(features)
        return [logits, slices_first(spatial.downsample(local_probabilities(logits)))]

    local, pooled = unet_level_by_slabs(
        local_unet, x, slabs, local_part, [x.dtype, x.dtype], levels_by_slabs=levels_by_slabs, halos=halos
    )
    coarse = spatial.coarse_logits(joined(pooled, spatial.num_labels), spatial.downsample(x))
    del pooled

    def combined(index: tf.Tensor) -> list[tf.Tensor]:
        begin, end = slabs.bounds(index)
        upsampled = upsampled_slices(spatial.upsample, spatial.upsample.support, coarse, begin, end)
        local_slab = local.read(index)
        local_slab.set_shape([None, None, None, None, spatial.num_labels])
        return [finish(combine([local_logits(local_slab), spatial_logits(upsampled)]))]

    (finished,) = slabs.map(combined, [finished_dtype])
    return finished


def original_scn_variable_keys(checkpoint: str | Path) -> list[str]:
    """The original segmentation checkpoint's variable keys in our weight order (`build_scn(...).weights`).

    `checkpoint` is the prefix `<saved model>/variables/variables`; the `.index` file is enough. Order: the
    local-appearance U-Net `local_appearance/variables/0..`, its head `local_appearance/prediction/{kernel,bias}`
    (tracked as an attribute, so outside the numbered list), then `spatial_configuration/variables/0..`.
    """
    head = [f"{LOCAL_SCOPE}/prediction/{kind}{VALUE_SUFFIX}" for kind in ("kernel", "bias")]
    local = numbered_variable_keys(checkpoint, LOCAL_SCOPE)
    return [*local, *head, *numbered_variable_keys(checkpoint, SPATIAL_SCOPE)]
