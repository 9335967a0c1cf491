"""A generic 3-D U-Net on channels-last tensors (N, z, y, x, C), the building block of both stages.

Stage 1 (localization) and the local-appearance part of stage 2 use 5 levels of 32 filters; every
spatial-configuration sub-net of stage 2 uses 4 levels of 16 filters. Filters stay constant over the levels.
Level i works at 1/2^i of the input resolution, so every spatial size must be a multiple of 2^(levels - 1).

The weights are ordered as the original's checkpoints store them: the contracting blocks of levels 0..L-1, then
the expanding blocks of levels 0..L-1, each convolution's kernel followed by its bias. Kernels are
[kz, ky, kx, c_in, c_out], the layout of the original's kernels in either data format.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from efficientscn.nn.upsample import UpSampling3DCubic, UpSampling3DLinear

UPSAMPLING_LAYERS = {"linear": UpSampling3DLinear, "cubic": UpSampling3DCubic}
"""The interpolations available for the expanding path's x2 upsampling."""


@keras.saving.register_keras_serializable(package="efficientscn")
class BFloat16SafeConv3D(keras.layers.Conv3D):
    """Keras' channels-last Conv3D, computed in float32 where a bfloat16 input has fewer than 3 voxels along an axis.

    TensorFlow 2.21's CPU (oneDNN) bfloat16 kernel gradient of a 3x3x3 convolution with 32 channels returns
    non-finite values, at random, for inputs 2 voxels deep: the deepest U-Net level of a 32-slice input, which
    then stops a bfloat16 training run. Such tensors are a few hundred voxels, so float32 costs nothing there;
    the result is the bfloat16 convolution's up to its rounding. Other dtypes and sizes are untouched
    (docs/fidelity.md #19).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last":
            raise ValueError(f"{type(self).__name__} is channels-last only, got data_format {self.data_format!r}")

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        convolve = super().convolution_op
        if inputs.dtype != tf.bfloat16:
            return convolve(inputs, kernel)

        def in_float32() -> tf.Tensor:
            return tf.cast(convolve(tf.cast(inputs, tf.float32), tf.cast(kernel, tf.float32)), inputs.dtype)

        tiny = tf.reduce_any(tf.shape(inputs)[1:4] < 3)  # z, y, x
        return tf.cond(tiny, in_float32, lambda: convolve(inputs, kernel))


def he_normal(seed: int | None = None) -> keras.initializers.Initializer:
    """He initialisation as the original: variance scaling 2.0, fan-in, truncated normal."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="truncated_normal", seed=seed)


@keras.saving.register_keras_serializable(package="efficientscn")
class UNet3D(keras.layers.Layer):
    """U-Net (N, z, y, x, C_in) -> (N, z, y, x, filters), in the layer's compute dtype.

    Every block is `convs_per_block` x [Conv3D 3x3x3 'same' with zero bias and an L2 kernel regulariser,
    activation, Dropout]. Level i's contracting block feeds a 2x2x2 average pool into level i + 1; the deepest
    level runs its contracting and expanding blocks one after the other; the expanding block of level i takes
    concat([contracting output of level i, x2 upsampled expanding output of level i + 1]) on the channel axis.

    `activation` is "leaky_relu" (negative slope `negative_slope`) or any Keras activation name. `upsampling` is
    "linear" or "cubic" (see `efficientscn.nn.upsample`). `l2_factor` scales the kernel regulariser (the
    training loss scales the regularisation losses again). `seed` makes the initial weights reproducible.
    """

    def __init__(
        self,
        levels: int = 5,
        filters: int = 32,
        convs_per_block: int = 2,
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        dropout: float = 0.1,
        upsampling: str = "linear",
        l2_factor: float = 1.0,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if levels < 1 or filters < 1 or convs_per_block < 1:
            raise ValueError(
                f"levels, filters and convs_per_block must be positive: {levels}, {filters}, {convs_per_block}"
            )
        if upsampling not in UPSAMPLING_LAYERS:
            raise ValueError(f"upsampling must be one of {sorted(UPSAMPLING_LAYERS)}, got {upsampling!r}")
        self.levels = levels
        self.filters = filters
        self.convs_per_block = convs_per_block
        self.activation = activation
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.upsampling = upsampling
        self.l2_factor = l2_factor
        self.seed = seed
        # Creation order is weight order: all contracting blocks, then all expanding blocks (the checkpoint order).
        self.contracting = [self._block(f"contracting{level}", level) for level in range(levels)]
        self.expanding = [self._block(f"expanding{level}", levels + level) for level in range(levels)]
        self.downsample = keras.layers.AveragePooling3D(pool_size=2, strides=2, name="downsample")
        self.upsample = UPSAMPLING_LAYERS[upsampling](2, name="upsample")
        self.concatenate = keras.layers.Concatenate(axis=-1, name="concatenate")

    def _block(self, name: str, index: int) -> list[keras.layers.Layer]:
        """The layers of one block; `index` numbers the blocks in weight order (for per-convolution seeds)."""
        layers: list[keras.layers.Layer] = []
        for conv in range(self.convs_per_block):
            seed = None if self.seed is None else self.seed + index * self.convs_per_block + conv
            layers.append(
                BFloat16SafeConv3D(
                    self.filters,
                    3,
                    padding="same",
                    kernel_initializer=he_normal(seed),
                    bias_initializer="zeros",
                    kernel_regularizer=keras.regularizers.L2(self.l2_factor) if self.l2_factor else None,
                    name=f"{name}_conv{conv}",
                )
            )
            if self.activation == "leaky_relu":
                layers.append(keras.layers.LeakyReLU(negative_slope=self.negative_slope, name=f"{name}_act{conv}"))
            else:
                layers.append(keras.layers.Activation(self.activation, name=f"{name}_act{conv}"))
            layers.append(keras.layers.Dropout(self.dropout, name=f"{name}_dropout{conv}"))
        return layers

    def prediction_head(self, channels: int, name: str = "prediction") -> keras.layers.Conv3D:
        """The 1x1x1 convolution to `channels` logits that follows this U-Net: He init with the seed after the
        U-Net's own, zero bias, no regulariser (as the original's heads, whose checkpoints hold kernel and bias)."""
        seed = None if self.seed is None else self.seed + 2 * self.levels * self.convs_per_block
        return keras.layers.Conv3D(channels, 1, kernel_initializer=he_normal(seed), bias_initializer="zeros", name=name)

    def build(self, input_shape: tuple) -> None:
        """Build every convolution for `input_shape` (N, z, y, x, C_in); only C_in must be known."""
        spatial = tuple(input_shape[:-1])
        for level in range(self.levels):
            self._build_block(self.contracting[level], (*spatial, input_shape[-1] if level == 0 else self.filters))
        for level in range(self.levels):
            deepest = level == self.levels - 1
            self._build_block(self.expanding[level], (*spatial, self.filters if deepest else 2 * self.filters))

    def _build_block(self, block: list[keras.layers.Layer], input_shape: tuple) -> None:
        shape = input_shape
        for layer in block:
            layer.build(shape)
            shape = (*shape[:-1], self.filters)

    @staticmethod
    def _run_block(block: list[keras.layers.Layer], x: tf.Tensor, training: bool | None) -> tf.Tensor:
        for layer in block:
            x = layer(x, training=training) if isinstance(layer, keras.layers.Dropout) else layer(x)
        return x

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.from_level(inputs, 0, training)

    def from_level(self, inputs: tf.Tensor, level: int, training: bool | None = None) -> tf.Tensor:
        """The U-Net's levels `level`.. on the input of level `level` (the input pooled `level` times): the expanding
        output of that level. `from_level(x, 0)` is the whole U-Net; slab-wise inference (`efficientscn.nn.slabs`)
        runs the upper levels itself and the rest through this."""
        skips = []
        x = inputs
        for current in range(level, self.levels):
            x = self._run_block(self.contracting[current], x, training)
            skips.append(x)
            if current < self.levels - 1:
                x = self.downsample(x)
        x = self._run_block(self.expanding[-1], x, training)
        for current in reversed(range(level, self.levels - 1)):
            x = self.concatenate([skips[current - level], self.upsample(x)])
            x = self._run_block(self.expanding[current], x, training)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "levels": self.levels,
            "filters": self.filters,
            "convs_per_block": self.convs_per_block,
            "activation": self.activation,
            "negative_slope": self.negative_slope,
            "dropout": self.dropout,
            "upsampling": self.upsampling,
            "l2_factor": self.l2_factor,
            "seed": self.seed,
        }
