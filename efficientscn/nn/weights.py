"""Weights of the original's checkpoints, read and assigned by order and shape rather than by name.

The original saved its tf.keras models so that a model's weights appear in its checkpoint as
`<scope>/variables/<i>/.ATTRIBUTES/VARIABLE_VALUE`, i = 0, 1, ... in the model's weight order. Our networks
create their weights in that same order, so weight i here is variable i there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def numbered_variable_keys(checkpoint: str | Path, scope: str, *, numbered: str = "variables") -> list[str]:
    """The keys `<scope>/<numbered>/<i>/.ATTRIBUTES/VARIABLE_VALUE` of a checkpoint, in numeric order of i.

    `checkpoint` is the checkpoint prefix (for a SavedModel: `<dir>/variables/variables`); its `.index` file is
    enough. `numbered` "" reads `<scope>/<i>/...`, a list attribute of a tf.Module such as our exports'
    `model_variables`. Raises ValueError if the scope holds no numbered variables or the numbers have gaps.
    """
    prefix = f"{scope}/{numbered}" if numbered else scope
    pattern = re.compile(rf"^{re.escape(prefix)}/(\d+){re.escape(VALUE_SUFFIX)}$")
    numbered = {}
    for key, _ in tf.train.list_variables(str(checkpoint)):
        match = pattern.match(key)
        if match:
            numbered[int(match.group(1))] = key
    if not numbered:
        raise ValueError(f"{checkpoint}: no variables under {prefix}/")
    if sorted(numbered) != list(range(len(numbered))):
        missing = sorted(set(range(max(numbered) + 1)) - set(numbered))
        raise ValueError(f"{checkpoint}: {prefix}/ misses numbers {missing[:8]}")
    return [numbered[i] for i in range(len(numbered))]


def checkpoint_shapes(checkpoint: str | Path, keys: Sequence[str]) -> list[tuple[int, ...]]:
    """The shapes of the given checkpoint variables, in the order of `keys` (needs only the `.index` file)."""
    shapes = {key: tuple(shape) for key, shape in tf.train.list_variables(str(checkpoint))}
    return [shapes[key] for key in keys]


def read_checkpoint_arrays(checkpoint: str | Path, keys: Sequence[str]) -> list[np.ndarray]:
    """The values of the given checkpoint variables, in the order of `keys`; ValueError naming the checkpoint and
    the variable if one cannot be read (a truncated or corrupt variables file)."""
    reader = tf.train.load_checkpoint(str(checkpoint))
    arrays = []
    for key in keys:
        try:
            arrays.append(reader.get_tensor(key))
        except (IndexError, RuntimeError, tf.errors.OpError) as error:  # the reader raises IndexError on a short file
            raise ValueError(f"{checkpoint}: variable {key} cannot be read (truncated or corrupt?): {error}") from error
    return arrays


def assign_weights_by_order(
    weights: Sequence[keras.Variable], arrays: Sequence[np.ndarray], names: Sequence[str] | None = None
) -> None:
    """Assign `arrays[i]` to `weights[i]` for every i, after checking that counts and all shapes match.

    `names` (default: the array positions) label the arrays in the error message. Nothing is assigned unless
    everything matches. The arrays are cast to each weight's dtype.
    """
    names = list(names) if names is not None else [f"array {i}" for i in range(len(arrays))]
    if len(weights) != len(arrays):
        raise ValueError(f"the model has {len(weights)} weights but {len(arrays)} arrays were given")
    for index, (weight, array, name) in enumerate(zip(weights, arrays, names, strict=True)):
        if tuple(weight.shape) != tuple(array.shape):
            raise ValueError(
                f"weight {index} ({weight.path}) has shape {tuple(weight.shape)} but {name} has shape "
                f"{tuple(array.shape)}"
            )
    for weight, array in zip(weights, arrays, strict=True):
        weight.assign(np.asarray(array, dtype=weight.dtype))
    logger.debug("assigned %d arrays by order", len(arrays))
