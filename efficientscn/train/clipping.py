"""Norm-adaptive gradient clipping: clip at a multiple of a running average of the gradient norm.

A fixed threshold is wrong by orders of magnitude early or late in training; this one follows the typical norm.
The average starts at `initial_average` and moves by `rate` toward min(norm, threshold) after every step whose
norm is finite, so an outlier step neither passes unclipped nor drags the threshold up.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


class AdaptiveGradientClipping(tf.Module):
    """Clip gradients by global norm at `factor` x a running average of the norm (kept in a checkpointed variable)."""

    def __init__(self, factor: float = 5.0, initial_average: float = 10.0, rate: float = 0.01) -> None:
        super().__init__(name="adaptive_gradient_clipping")
        self.factor, self.rate = float(factor), float(rate)
        self.average = tf.Variable(float(initial_average), trainable=False, dtype=tf.float32, name="norm_average")

    def __call__(
        self, gradients: Sequence[tf.Tensor], unscale: tf.Tensor | float = 1.0
    ) -> tuple[list, tf.Tensor, tf.Tensor]:
        """(clipped gradients, global norm, threshold) of gradients that are `unscale` x the true ones.

        With a loss scale, pass the scaled gradients and the scale: the norm is measured on the true gradients and
        the clipping factor, being a ratio, applies to the scaled ones unchanged.
        """
        norm = tf.linalg.global_norm(gradients) / tf.cast(unscale, tf.float32)
        threshold = self.factor * self.average
        factor = tf.where(norm > threshold, threshold / norm, 1.0)
        clipped = [g * tf.cast(factor, g.dtype) for g in gradients]
        finite = tf.math.is_finite(norm)
        self.average.assign(
            tf.where(finite, self.average + self.rate * (tf.minimum(norm, threshold) - self.average), self.average)
        )
        return clipped, norm, threshold
