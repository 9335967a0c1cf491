"""Training losses on channels-last tensors (N, z, y, x, C), computed in float32 whatever the network's precision."""

from __future__ import annotations

import tensorflow as tf

DICE_LABEL_WEIGHT_EPSILON = 1e-4
DICE_EPSILON = 1e-8
"""Added to the numerator and to the denominator of the generalized Dice, as the original."""


def generalized_dice_loss(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """Generalized Dice loss (Sudre et al. 2017), the original's "squared" variant, averaged over the batch.

    labels, probabilities: (N, z, y, x, C), one-hot labels and per-label probabilities. Per batch item and label,
    the weight is w_l = 1 / ((sum of the label over the image)^2 + 1e-4): the square of the label's voxel count,
    so each label's overlap term w_l * sum(labels * p) is about 1 / count and a small organ outweighs a large one.
    The loss is 1 - 2 * (sum_l w_l * sum(labels * p) + 1e-8) / (sum_l w_l * sum(labels + p^2) + 1e-8).
    A scalar float32.
    """
    labels = tf.cast(labels, tf.float32)
    probabilities = tf.cast(probabilities, tf.float32)
    spatial_axes = [1, 2, 3]
    weights = 1.0 / (tf.square(tf.reduce_sum(labels, axis=spatial_axes)) + DICE_LABEL_WEIGHT_EPSILON)
    intersection = tf.reduce_sum(labels * probabilities, axis=spatial_axes)
    denominator = tf.reduce_sum(labels + probabilities * probabilities, axis=spatial_axes)
    numerator = tf.reduce_sum(weights * intersection, axis=-1) + DICE_EPSILON
    return tf.reduce_mean(1.0 - 2.0 * numerator / (tf.reduce_sum(weights * denominator, axis=-1) + DICE_EPSILON))


def generalized_dice_loss_from_logits(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """`generalized_dice_loss` on the softmax over the last axis of `logits`."""
    return generalized_dice_loss(labels, tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1))


def sigmoid_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean sigmoid cross-entropy over every voxel and channel of (N, z, y, x, C) logits; a float32 scalar."""
    labels = tf.cast(labels, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32)))
