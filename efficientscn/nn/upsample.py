"""Separable integer-factor upsampling of 3-D channels-last tensors (N, z, y, x, C) without weights.

Both interpolations are half-pixel-centred with edge-replicate borders: output voxel o of an axis upsampled by f
samples the input at (o + 0.5) / f - 0.5, and samples beyond the first or last voxel take that voxel's value.
Every output phase r = o mod f is a fixed weighted sum of a few shifted copies of the replicate-padded input,
so the layers cost a handful of multiply-adds per voxel, keep the input dtype (float32, bfloat16, float16) and
accept unknown spatial sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf

SPATIAL_AXES = (1, 2, 3)
"""The z, y and x axes of a channels-last (N, z, y, x, C) tensor."""

KEYS_A = -0.5
"""The Keys cubic convolution parameter (as bicubic resizing with half-pixel centres uses)."""


def linear_kernel(t: float) -> float:
    """The linear (tent) interpolation kernel; support (-1, 1)."""
    return max(0.0, 1.0 - abs(t))


def keys_cubic_kernel(t: float, a: float = KEYS_A) -> float:
    """The Keys cubic convolution kernel with parameter `a`; support (-2, 2)."""
    t = abs(t)
    if t <= 1.0:
        return (a + 2.0) * t**3 - (a + 3.0) * t**2 + 1.0
    if t < 2.0:
        return a * t**3 - 5.0 * a * t**2 + 8.0 * a * t - 4.0 * a
    return 0.0


def phase_taps(factor: int, kernel: Callable[[float], float], support: int) -> list[list[tuple[int, float]]]:
    """Per output phase r in 0..factor-1, the (input offset, weight) pairs of its non-zero taps.

    Output voxel factor * i + r lies at input coordinate i + d_r with d_r = (2r + 1 - factor) / (2 factor); tap k
    gets weight kernel(k - d_r). The weights of each phase sum to 1 for kernels that partition unity.
    """
    if factor < 1:
        raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
    taps = []
    for phase in range(factor):
        shift = (2 * phase + 1 - factor) / (2 * factor)
        weights = [(k, kernel(k - shift)) for k in range(-support, support + 1)]
        taps.append([(k, w) for k, w in weights if not math.isclose(w, 0.0, abs_tol=1e-12)])
    return taps


def _along(axis: int, start: int | tf.Tensor | None, stop: int | tf.Tensor | None) -> tuple[slice, ...]:
    """An index selecting start:stop along `axis` and everything along the axes before it."""
    return (slice(None),) * axis + (slice(start, stop),)


def _replicate_pad(x: tf.Tensor, axis: int, pad: int) -> tf.Tensor:
    """`x` with its first and last slice along `axis` repeated `pad` times before and after."""
    first, last = x[_along(axis, 0, 1)], x[_along(axis, -1, None)]
    return tf.concat([first] * pad + [x] + [last] * pad, axis=axis)


def _upsample_axis(x: tf.Tensor, axis: int, factor: int, taps: list[list[tuple[int, float]]], pad: int) -> tf.Tensor:
    """Upsample one axis of `x` by `factor`: the phases are computed, stacked after `axis` and interleaved."""
    shape = tf.shape(x)
    size = shape[axis]
    padded = _replicate_pad(x, axis, pad)
    phases = []
    for taps_of_phase in taps:
        terms = [
            padded[_along(axis, pad + offset, pad + offset + size)] * tf.constant(weight, dtype=x.dtype)
            for offset, weight in taps_of_phase
        ]
        phases.append(tf.add_n(terms) if len(terms) > 1 else terms[0])
    stacked = tf.stack(phases, axis=axis + 1)
    result = tf.reshape(stacked, tf.concat([shape[:axis], [size * factor], shape[axis + 1 :]], axis=0))
    static = x.shape.as_list()
    if static[axis] is not None:
        static[axis] *= factor
    result.set_shape(static)
    return result


def upsample3d(x: tf.Tensor, factor: int, kernel: Callable[[float], float], support: int) -> tf.Tensor:
    """Upsample the z, y and x axes of a channels-last (N, z, y, x, C) tensor by `factor`, in the input dtype.

    `kernel` is an interpolation kernel with support (-support, support) evaluated at input-voxel distances.
    """
    if x.shape.rank != 5:
        raise ValueError(f"expected a channels-last (N, z, y, x, C) tensor, got shape {x.shape}")
    if factor == 1:
        return x
    taps = phase_taps(factor, kernel, support)
    for axis in SPATIAL_AXES:
        x = _upsample_axis(x, axis, factor, taps, support)
    return x


class _UpSampling3D(keras.layers.Layer):
    """Base of the separable 3-D upsampling layers: (N, z, y, x, C) -> (N, f z, f y, f x, C), same dtype."""

    support: int
    """Half-width of the kernel's support, in input voxels: the replicate padding per side."""
    interpolation_kernel: Callable[[float], float]

    def __init__(self, factor: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
        self.factor = int(factor)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return upsample3d(inputs, self.factor, self.interpolation_kernel, self.support)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(
            None if s is None else s * self.factor if axis in SPATIAL_AXES else s for axis, s in enumerate(input_shape)
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="efficientscn")
class UpSampling3DLinear(_UpSampling3D):
    """Separable linear upsampling by an integer factor; for factor 2 the weights are 0.75 and 0.25."""

    support = 1
    interpolation_kernel = staticmethod(linear_kernel)


@keras.saving.register_keras_serializable(package="efficientscn")
class UpSampling3DCubic(_UpSampling3D):
    """Separable Keys cubic (a = -0.5) upsampling by an integer factor."""

    support = 2
    interpolation_kernel = staticmethod(keys_cubic_kernel)
