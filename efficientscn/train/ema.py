"""Exponential moving average of a model's weights: what the original tests, checkpoints and exports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import tensorflow as tf


class WeightAverage(tf.Module):
    """Shadow copies of `variables` updated as average <- decay * average + (1 - decay) * weight.

    Created inside the distribution strategy's scope, the shadows are mirrored like the weights. `swapped()` puts
    the averages into the model for testing or export and restores the trained weights afterwards.
    """

    def __init__(self, variables: Sequence[tf.Variable], decay: float) -> None:
        super().__init__(name="weight_average")
        self.decay = float(decay)
        self._weights = list(variables)
        self.averages = [
            tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"average_{i}") for i, v in enumerate(variables)
        ]

    def update(self) -> None:
        """One averaging step (inside a tf.function or eagerly, in cross-replica context)."""
        for average, weight in zip(self.averages, self._weights, strict=True):
            average.assign(self.decay * average + (1.0 - self.decay) * tf.convert_to_tensor(weight))

    def assign_to_weights(self) -> None:
        """Overwrite the weights with the averages (for a model that is only used for inference from now on)."""
        for average, weight in zip(self.averages, self._weights, strict=True):
            weight.assign(average)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The averages in the weights for the duration of the block, then the trained weights back."""
        trained = [tf.identity(tf.convert_to_tensor(w)) for w in self._weights]
        self.assign_to_weights()
        try:
            yield
        finally:
            for weight, value in zip(self._weights, trained, strict=True):
                weight.assign(value)
