"""A run's checkpoints as a network: which iteration, and the float32 network with its averaged (EMA) weights."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.model.precision import precision_policy
from efficientscn.train.ema import WeightAverage
from efficientscn.train.run_folder import WEIGHTS_DIR, checkpoint_iterations, checkpoint_path

logger = logging.getLogger(__name__)


def checkpoint_iteration(run: str | Path, iteration: int | None) -> int:
    """`iteration` if the run has a checkpoint of it, the latest checkpoint's for None; InputError otherwise."""
    available = checkpoint_iterations(run)
    if not available:
        raise InputError(f"{Path(run) / WEIGHTS_DIR}: no checkpoints")
    iteration = available[-1] if iteration is None else iteration
    if iteration not in available:
        raise InputError(f"{run}: no checkpoint of iteration {iteration} (available: {available})")
    return iteration


def load_averaged_model(run: str | Path, iteration: int | None, build: Callable[[], keras.Model]) -> keras.Model:
    """A float32 network from `build` with the averaged weights of a run checkpoint (None: the latest)."""
    iteration = checkpoint_iteration(run, iteration)
    with precision_policy("float32"):
        model = build()
    average = WeightAverage(model.trainable_variables, decay=0.0)
    path = checkpoint_path(run, iteration)
    try:  # every weight and average must come from the checkpoint; the optimizer state is left out on purpose
        tf.train.Checkpoint(model=model, weight_average=average).read(str(path)).assert_existing_objects_matched()
    except AssertionError as error:
        raise InputError(f"{path}: does not fit the network of {run}/config.json ({error})") from None
    average.assign_to_weights()
    logger.info("loaded the averaged weights of %s iteration %d", run, iteration)
    return model
