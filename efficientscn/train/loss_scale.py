"""Dynamic loss scaling for float16 training, applied where the gradients of all replicas are already summed.

Keras' LossScaleOptimizer must be called per replica; the training loop sums, clips and applies gradients once,
in cross-replica context, so it keeps the scale itself: multiply the loss by `scale`, divide the gradients by it,
skip a step whose gradients are not finite and halve the scale, double it after `growth_steps` finite steps in a
row (the original: initial scale 1, growth period 100).
"""

from __future__ import annotations

import tensorflow as tf


class DynamicLossScale(tf.Module):
    """The loss scale and its count of finite steps, as checkpointed variables."""

    def __init__(self, initial_scale: float = 1.0, growth_steps: int = 100, factor: float = 2.0) -> None:
        super().__init__(name="dynamic_loss_scale")
        self.growth_steps, self.factor = int(growth_steps), float(factor)
        self.scale = tf.Variable(float(initial_scale), trainable=False, dtype=tf.float32, name="scale")
        self.finite_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="finite_steps")

    def update(self, finite: tf.Tensor) -> None:
        """Record one step: grow the scale after enough finite steps, halve it after a non-finite one."""
        grow = tf.logical_and(finite, self.finite_steps + 1 >= self.growth_steps)
        self.scale.assign(
            tf.where(finite, tf.where(grow, self.scale * self.factor, self.scale), self.scale / self.factor)
        )
        self.finite_steps.assign(
            tf.where(finite, tf.where(grow, tf.zeros_like(self.finite_steps), self.finite_steps + 1), 0)
        )
