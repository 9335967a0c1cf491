"""Norm-adaptive gradient clipping: clip at a multiple of a running average of the gradient norm.

A fixed threshold is wrong by orders of magnitude early or late in training; this one follows the typical norm.
The average starts at `initial_average` and moves by `rate` toward min(norm, threshold) after every step whose
norm is finite, so an outlier step neither passes unclipped nor drags the threshold up.
"""

from __future__ import annotations

import tensorflow as tf


class AdaptiveGradientClipping(tf.Module):
    """Clip gradients by global norm at `factor` x a running average of the norm (kept in a checkpointed variable).

    Called with the norm of the true (unscaled, summed over replicas) gradients, it returns the factor to multiply
    the gradients by: being a ratio, it applies to loss-scaled or per-replica gradients unchanged.
    """

    def __init__(self, factor: float = 5.0, initial_average: float = 10.0, rate: float = 0.01) -> None:
        super().__init__(name="adaptive_gradient_clipping")
        self.factor, self.rate = float(factor), float(rate)
        self.average = tf.Variable(float(initial_average), trainable=False, dtype=tf.float32, name="norm_average")

    def __call__(self, norm: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(factor to multiply the gradients by, threshold) for a global gradient norm; updates the average."""
        threshold = self.factor * self.average
        factor = tf.where(norm > threshold, threshold / norm, 1.0)
        finite = tf.math.is_finite(norm)
        self.average.assign(
            tf.where(finite, self.average + self.rate * (tf.minimum(norm, threshold) - self.average), self.average)
        )
        return factor, threshold
