"""Stand-ins for the original's segmentation SavedModel, whose trained weights are not available here.

A stand-in has the original's interface (`serving_default`: `image` float16 [N, 1, D, H, W] -> `output_0` float16
[N, 5, D, H, W] probabilities, computed in float16 so that a CPU runs it only under XLA, as the original's) and the
original's variable layout (the key names and shapes of its `variables.index`), and no export metadata of ours.
Its values are the shipped demonstration SCN's: a seeded random SCN gives near-uniform probabilities (94 % of the
voxels have their two best labels within 0.01), whose argmax even float32 cannot reproduce from float16 at 99.9 %,
so random values would test nothing; trained values give decisive probabilities, as the original's would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from efficientscn.model.precision import precision_policy
from efficientscn.model.savedmodel import IMAGE_SIGNATURE, MODEL_VARIABLES, SIGNATURE
from efficientscn.model.specs import SEGMENTATION_SPEC
from efficientscn.nn.config import SCNConfig
from efficientscn.nn.weights import assign_weights_by_order, numbered_variable_keys, read_checkpoint_arrays

from helpers import REPO_ROOT

SHIPPED_SCN = REPO_ROOT / "submitted_saved_models" / "segmentation"
LOCAL_WEIGHTS = 40
"""The local-appearance U-Net's weights come first, then its head's kernel and bias, then the spatial part."""
SUBNET_WEIGHTS = 34
"""Each of the five spatial-configuration sub-networks has 34 weights, those of labels 1-4 first."""


def shipped_scn_weights() -> list[np.ndarray]:
    """The demonstration SCN's 212 weights, in our network's weight order."""
    checkpoint = SHIPPED_SCN / "variables" / "variables"
    with precision_policy("float32"):
        model = SEGMENTATION_SPEC.build(SCNConfig())
    keys = numbered_variable_keys(checkpoint, MODEL_VARIABLES, numbered="")
    assign_weights_by_order(model.variables, read_checkpoint_arrays(checkpoint, keys), keys)
    return [weight.numpy() for weight in model.weights]


def _holder(**children: object) -> object:
    """A trackable object with exactly these children (a tf.Module cannot have `variables`, a Checkpoint adds a
    save counter): the checkpoint keys become `<attribute>/<child>/...` as in the original's Keras models."""
    holder = tf.__internal__.tracking.AutoTrackable()
    for name, child in children.items():
        setattr(holder, name, child)
    return holder


def write_original_layout_scn(output: Path, weights: list[np.ndarray], *, swap_subnets: bool = False) -> Path:
    """Save an SCN with `weights` as the original's segmentation SavedModel at `output`.

    `swap_subnets`: the graph computes labels 1 and 2 with the sub-networks stored under each other's numbers, as
    a SavedModel whose variables are not in the order import assumes would: same shapes, other values.
    """
    with precision_policy("float16"):  # the original's mixed_float16
        model = SEGMENTATION_SPEC.build(SCNConfig())
    assign_weights_by_order(model.weights, weights)
    variables = [weight.value for weight in model.weights]
    local, head, spatial = variables[:LOCAL_WEIGHTS], variables[LOCAL_WEIGHTS : LOCAL_WEIGHTS + 2], variables[42:]
    if swap_subnets:
        first, second = spatial[:SUBNET_WEIGHTS], spatial[SUBNET_WEIGHTS : 2 * SUBNET_WEIGHTS]
        spatial = [*second, *first, *spatial[2 * SUBNET_WEIGHTS :]]

    @tf.function(input_signature=[IMAGE_SIGNATURE])
    def serve(image: tf.Tensor) -> tf.Tensor:
        probabilities = model(tf.transpose(image, [0, 2, 3, 4, 1]), training=False)["probabilities"]
        return tf.cast(tf.transpose(probabilities, [0, 4, 1, 2, 3]), tf.float16)

    root = tf.Module()
    root.local_appearance = _holder(variables=local, prediction=_holder(kernel=head[0], bias=head[1]))
    root.spatial_configuration = _holder(variables=spatial)
    root.serve = serve
    tf.saved_model.save(root, str(output), signatures={SIGNATURE: serve})
    return output
