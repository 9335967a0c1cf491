"""Precision: what "auto" means for training and inference, and a Keras policy that holds inside its block only."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from efficientscn.model.precision import (
    cpu_has_bfloat16,
    inference_precision,
    precision_policy,
    training_precision,
    uses_loss_scaling,
)


def test_a_precision_policy_applies_inside_its_block_only():
    with precision_policy("bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        assert keras.layers.Dense(1).compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    with precision_policy("float16"):
        with precision_policy("bfloat16"):
            pass
        assert keras.config.dtype_policy().name == "mixed_float16"  # nested: the enclosing policy comes back
    with pytest.raises(RuntimeError), precision_policy("float16"):
        raise RuntimeError("a failed build")
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="concrete"), precision_policy("auto"):
        pass


def test_precision_auto_is_float32_on_this_cpu_and_only_float16_scales_the_loss():
    assert training_precision("auto") == ("float16" if tf.config.list_physical_devices("GPU") else "float32")
    assert uses_loss_scaling("float16") and not uses_loss_scaling("bfloat16") and not uses_loss_scaling("float32")
    with pytest.raises(ValueError, match="precision"):
        training_precision("int8")


def test_inference_auto_is_float16_on_a_gpu_and_bfloat16_only_where_the_cpu_has_it():
    assert inference_precision("gpu", "auto") == "float16"
    assert inference_precision("cpu", "auto") == ("bfloat16" if cpu_has_bfloat16() else "float32")
    assert inference_precision("cpu", "float32") == "float32"
    with pytest.raises(ValueError, match="precision"):
        inference_precision("cpu", "half")
