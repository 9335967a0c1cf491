"""Stage 1: the localization network, a 5-level U-Net giving background/foreground logits at 6 mm.

Input (N, z, y, x, 1) channels-last, the CT intensities /2048 clamped to [-1, 1]; z, y and x must be multiples
of 16 (the valid sizes 32..256 in steps of 16 are). Output (N, z, y, x, 2) float32 logits (background,
foreground) under any Keras dtype policy: the foreground mask is logit 1 > logit 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from efficientscn.nn.config import LocalizationNetConfig
from efficientscn.nn.slabs import LEVELS_BY_SLABS, LevelHalos, slab_levels, slabs_for_budget, unet_level_by_slabs
from efficientscn.nn.unet import UNet3D
from efficientscn.nn.weights import assign_weights_by_order, numbered_variable_keys, read_checkpoint_arrays

logger = logging.getLogger(__name__)

ORIGINAL_SCOPE = "model"
"""Where the original's localization SavedModel keeps its weights: `model/variables/<i>` in weight order."""


def build_localization_net(config: LocalizationNetConfig | None = None) -> keras.Model:
    """The localization network: (N, z, y, x, 1) -> (N, z, y, x, num_labels) float32 logits.

    It is built in the current Keras dtype policy (float32, mixed_float16 or mixed_bfloat16); the last layer casts
    to float32. Weights: U-Net convolutions in checkpoint order, then the 1x1x1 head's kernel and bias.
    """
    config = config or LocalizationNetConfig()
    image = keras.Input(shape=(None, None, None, 1), name="image")
    unet = UNet3D(
        levels=config.levels,
        filters=config.filters,
        convs_per_block=config.convs_per_block,
        activation="leaky_relu",
        negative_slope=config.leaky_relu_alpha,
        dropout=config.dropout_rate,
        upsampling="linear",
        l2_factor=config.l2_factor,
        seed=config.seed,
        name="unet",
    )
    logits = unet.prediction_head(config.num_labels)(unet(image))
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(image, logits, name="localization")


def localization_logits_by_slabs(
    model: keras.Model,
    image: tf.Tensor,
    budget_bytes: int,
    finish: Callable[[tf.Tensor], tf.Tensor],
    finished_dtype: tf.DType,
    levels_by_slabs: int = LEVELS_BY_SLABS,
    halos: Sequence[LevelHalos] | None = None,
) -> tf.TensorArray:
    """`build_localization_net`'s logits of `image` (N, z, y, x, 1), computed by z-slabs of a depth fitting
    `budget_bytes` (`efficientscn.nn.slabs`) and passed slab by slab through `finish`, which must put the slab's
    slices first and give `finished_dtype`; the TensorArray holds slab i at i. Inference only; the values are the
    whole network's, bit for bit on the CPUs tested. `halos`: see `unet_level_by_slabs`."""
    unet, head, logits = model.get_layer("unet"), model.get_layer("prediction"), model.get_layer("logits")
    x = tf.cast(image, unet.compute_dtype)
    levels_by_slabs = slab_levels(unet, levels_by_slabs)
    slabs = slabs_for_budget(unet, x, budget_bytes, 2**levels_by_slabs, levels_by_slabs)
    (finished,) = unet_level_by_slabs(
        unet, x, slabs, lambda features: [finish(logits(head(features)))], [finished_dtype],
        levels_by_slabs=levels_by_slabs, halos=halos,
    )  # fmt: skip
    return finished


def load_original_localization_weights(model: keras.Model, saved_model_dir: str | Path) -> None:
    """Load the weights of the original's released localization SavedModel into `model`, by order and shape.

    Reads `<saved_model_dir>/variables/variables` (TensorFlow checkpoint) without running its graph. Raises
    ValueError naming the first variable whose shape differs, or a count mismatch.
    """
    checkpoint = Path(saved_model_dir) / "variables" / "variables"
    keys = numbered_variable_keys(checkpoint, ORIGINAL_SCOPE)
    assign_weights_by_order(model.weights, read_checkpoint_arrays(checkpoint, keys), keys)
    logger.info("loaded %d original localization variables from %s", len(keys), saved_model_dir)
