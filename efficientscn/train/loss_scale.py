"""Dynamic loss scaling for float16 training, applied where the gradients of all replicas are already summed.

Keras' LossScaleOptimizer must be called per replica; the training loop sums, clips and applies gradients once,
in cross-replica context, so it keeps the scale itself, with the rules of the TensorFlow 2.6 LossScaleOptimizer
the original trained with: multiply the loss by `scale`, divide the gradients by it; a step whose gradients are not
finite is skipped and halves the scale, but never below 1 (Keras 3 has no such floor); `growth_steps` finite steps
in a row double it, unless the doubled scale would overflow (the original: initial scale 1, growth period 100 for
the localization network, 2^15 and 1000 for the SCN).
"""

from __future__ import annotations

import tensorflow as tf

MINIMUM_SCALE = 1.0
"""A non-finite step halves the scale down to this floor and no further."""


class DynamicLossScale(tf.Module):
    """The loss scale and its count of finite steps, as checkpointed variables."""

    def __init__(self, initial_scale: float = 1.0, growth_steps: int = 100, factor: float = 2.0) -> None:
        super().__init__(name="dynamic_loss_scale")
        self.growth_steps, self.factor = int(growth_steps), float(factor)
        self.scale = tf.Variable(float(initial_scale), trainable=False, dtype=tf.float32, name="scale")
        self.finite_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="finite_steps")

    def update(self, finite: tf.Tensor) -> None:
        """Record one step: grow the scale after enough finite steps, halve it (to 1 at least) after a bad one."""
        grown = self.scale * self.factor
        grow = tf.logical_and(finite, self.finite_steps + 1 >= self.growth_steps)
        shrunk = tf.maximum(self.scale / self.factor, MINIMUM_SCALE)
        self.scale.assign(
            tf.where(finite, tf.where(tf.logical_and(grow, tf.math.is_finite(grown)), grown, self.scale), shrunk)
        )
        self.finite_steps.assign(
            tf.where(finite, tf.where(grow, tf.zeros_like(self.finite_steps), self.finite_steps + 1), 0)
        )
