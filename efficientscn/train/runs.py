"""Runs of a stage: train a fold in a new run folder, resume the newest one, export a checkpoint as a SavedModel.

A `Stage` names what differs between stage 1 and stage 2 (the run configuration, the training task, the
network and its SavedModel wrapper); everything else is done the same way for both here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import keras
import tensorflow as tf

from efficientscn.data.layout import FlareDataset
from efficientscn.export import checkpoint_iteration, load_averaged_model, refuse_existing, save_module
from efficientscn.settings import from_record, to_record
from efficientscn.train.loop import Trainer, TrainingConfig, TrainingTask
from efficientscn.train.precision import resolve_precision
from efficientscn.train.run_folder import latest_resumable_run, new_run_folder, read_config
from efficientscn.versions import versions


class RunConfig(Protocol):
    """A stage's run configuration: a frozen dataclass with at least these parts, saved as the run's config.json."""

    data: Any
    network: Any
    training: TrainingConfig


@dataclass(frozen=True)
class Stage:
    """What a stage brings to a run."""

    name: str
    """The run folders' name: <output>/<name>/cv<k>/<timestamp>/."""
    config_type: type
    task: Callable[[FlareDataset, int, Any], TrainingTask]
    """(dataset, fold, run configuration) -> the training task."""
    network: Callable[[Any], keras.Model]
    """Network configuration -> the network as exported (built in float32)."""
    module: Callable[[keras.Model], tf.Module]
    """The exported network -> the tf.Module saved with its `__call__` as the serving signature."""


def resumed_config(stage: Stage, run: Path, **training_changes: Any) -> RunConfig:
    """The configuration a run was started with, with training settings changed (e.g. a larger `max_iter`)."""
    record = read_config(run)
    config = from_record(
        stage.config_type, {f.name: record[f.name] for f in fields(stage.config_type) if f.name in record}
    )
    return replace(config, training=replace(config.training, **training_changes))


def train_stage(
    stage: Stage,
    dataset_root: str | Path,
    output: str | Path,
    cv: int,
    config: RunConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    devices: Sequence[str] | None = None,
) -> Path:
    """Train (or with `resume`, continue the newest run of) fold `cv`; returns the run folder.

    `config` defaults to the stage's paper settings. On resume, pass the run's own configuration
    (`resumed_config`), so that the network and the data are the ones its checkpoints were made with.
    """
    config = config if config is not None else stage.config_type()
    dataset = FlareDataset(Path(dataset_root))
    task = stage.task(dataset, cv, config)
    # the concrete precision goes into config.json, so a resumed run keeps it on any machine
    config = replace(config, training=replace(config.training, precision=resolve_precision(config.training.precision)))
    run = latest_resumable_run(output, stage.name, cv) if resume else new_run_folder(output, stage.name, cv)
    record = {"stage": stage.name, "cv": cv, "dataset": str(dataset.root.resolve()), "versions": versions()}
    record.update(to_record(config))
    trainer = Trainer(task, config.training, run, record=record, resume=resume, progress=progress, devices=devices)
    return trainer.run()


def export_stage(
    stage: Stage, run: str | Path, iteration: int | None, output: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the averaged network of a run's checkpoint (None: the latest) as the stage's SavedModel."""
    refuse_existing(output, overwrite=overwrite)  # before the minutes of loading and tracing
    iteration = checkpoint_iteration(run, iteration)
    network = from_record(stage.config_type, {"network": read_config(run)["network"]}).network
    model = load_averaged_model(run, iteration, lambda: stage.network(network))
    source = {"run": str(Path(run).resolve()), "iteration": iteration}
    return save_network(stage, model, network, output, overwrite=overwrite, source=source)


def save_network(
    stage: Stage,
    model: keras.Model,
    network: Any,
    output: str | Path,
    *,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
) -> Path:
    """Save a stage's network (built from the configuration `network`) as its SavedModel, with the metadata
    inference rebuilds it from; `source` says where the weights came from (a run and iteration, for example)."""
    metadata = {"stage": stage.name, "network": to_record(network), **(source or {}), "versions": versions()}
    return save_module(stage.module(model), output, overwrite=overwrite, metadata=metadata)
