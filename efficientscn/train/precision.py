"""Numeric precision of a training or inference run, chosen by device as the original's choice allows on a CPU.

"float16" is Keras mixed float16 (float16 compute, float32 weights, dynamic loss scaling), what the original
trains with on a GPU. On a CPU float16 convolution is an order of magnitude slower than float32, so "auto" picks
float32 there; "bfloat16" (mixed bfloat16, no loss scaling) is the option for CPUs with bfloat16 instructions.
"""

from __future__ import annotations

import logging
from typing import Literal

logger = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def resolve_precision(precision: str) -> str:
    """The concrete precision for `precision`: "auto" is float16 when a GPU is visible, float32 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        import tensorflow as tf  # here, not at the top: the command line reads PRECISIONS without TensorFlow

        return "float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


def set_precision(precision: str) -> str:
    """Set the Keras global dtype policy for `precision` (before building a model); returns the concrete one."""
    import keras

    concrete = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(_POLICIES[concrete])
    logger.info("precision: %s (Keras policy %s)", concrete, _POLICIES[concrete])
    return concrete


def uses_loss_scaling(precision: str) -> bool:
    """Whether a concrete precision needs a dynamic loss scale (float16 gradients underflow without one)."""
    return precision == "float16"
