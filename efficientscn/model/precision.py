"""Numeric precision of a training or inference run, chosen by device as the original's choice allows on a CPU.

"float16" is Keras mixed float16 (float16 compute, float32 weights, dynamic loss scaling), what the original
trains with on a GPU. On a CPU float16 convolution is an order of magnitude slower than float32, so "auto" picks
float32 there for training; "bfloat16" (mixed bfloat16, no loss scaling) is the option for CPUs with bfloat16
instructions (docs/fidelity.md #18; inference: #32). A network is built in a precision inside
`precision_policy(...)`, which restores the Keras policy it found.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal, get_args

logger = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def _checked(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision  # type: ignore[return-value]


def training_precision(precision: str) -> Precision:
    """The concrete training precision: "auto" is float16 when a GPU is visible (as the original), float32 otherwise."""
    if _checked(precision) == "auto":
        import tensorflow as tf  # here, not at the top: the command line reads PRECISIONS without TensorFlow

        return "float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision  # type: ignore[return-value]


def inference_precision(device: str, precision: str) -> Precision:
    """The concrete inference precision: "auto" is float16 on a GPU (as the original), bfloat16 on a CPU with
    native bfloat16 (it changes organ Dice by less than 0.005, see the README), float32 on other CPUs."""
    if _checked(precision) != "auto":
        return precision  # type: ignore[return-value]
    if device == "gpu":
        return "float16"
    return "bfloat16" if cpu_has_bfloat16() else "float32"


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Build networks in a concrete `precision` inside this block; the Keras dtype policy found is restored after."""
    import keras

    if _checked(precision) == "auto":
        raise ValueError("precision_policy needs a concrete precision; resolve 'auto' first")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bfloat16 is emulated, slowly."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_loss_scaling(precision: str) -> bool:
    """Whether a concrete precision needs a dynamic loss scale (float16 gradients underflow without one)."""
    return precision == "float16"
