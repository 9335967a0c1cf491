"""Runs of a stage: train folds in new run folders or resume their newest runs, export a checkpoint as a SavedModel.

Both stages run the same way here; a `Stage` (train/stages.py) names what differs. The rules for what a resumed
run may change and how a configuration file applies live here, so a Python caller gets the command line's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from efficientscn.data.layout import FlareDataset
from efficientscn.errors import InputError
from efficientscn.model.precision import training_precision
from efficientscn.model.savedmodel import refuse_existing
from efficientscn.settings import from_record, to_record, with_changes
from efficientscn.train.checkpoints import checkpoint_iteration, load_averaged_model
from efficientscn.train.distribution import agree_on_path, training_strategy, worker_role
from efficientscn.train.loop import Trainer
from efficientscn.train.run_folder import CONFIG_NAME, latest_resumable_run, new_run_folder, read_config
from efficientscn.train.stages import RunConfig, Stage
from efficientscn.versions import versions

logger = logging.getLogger(__name__)

RESUMABLE_SETTINGS = ("max_iter", "test_iter", "snapshot_iter", "log_iter", "workers")
"""The training settings a resumed run may change; the rest are the run's own, from its config.json."""


def config_from_file(stage: Stage, path: Path) -> RunConfig:
    """A stage's run configuration: the paper's, with the settings of a JSON file in config.json's layout."""
    try:
        return with_changes(stage.config_type(), json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"{path}: not a usable {stage.name} configuration ({error})") from error


def resumed_config(stage: Stage, run: Path, **training_changes: Any) -> RunConfig:
    """The configuration a run was started with, with training settings changed (e.g. a larger `max_iter`).

    InputError when the run is another stage's or its config.json does not fit this version's settings.
    """
    record = read_config(run)
    if record.get("stage", stage.name) != stage.name:
        raise InputError(f"{Path(run) / CONFIG_NAME}: a {record['stage']} run, not a {stage.name} run")
    try:
        config = from_record(
            stage.config_type, {f.name: record[f.name] for f in fields(stage.config_type) if f.name in record}
        )
    except (ValueError, TypeError) as error:
        raise InputError(f"{Path(run) / CONFIG_NAME}: not a usable {stage.name} configuration ({error})") from error
    return replace(config, training=replace(config.training, **training_changes))


def fold_configs(
    stage: Stage,
    dataset_root: str | Path,
    output: str | Path,
    folds: Sequence[int],
    *,
    training_changes: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    resume: bool = False,
) -> dict[int, RunConfig]:
    """The configuration of each fold's run, all found before the first fold trains for hours.

    New runs: the paper's settings, changed by `config_file` and then by `training_changes`. Resumed runs: each
    newest run's own configuration; only RESUMABLE_SETTINGS may change (InputError names the others).
    """
    changes = dict(training_changes or {})
    if resume:
        refused = sorted(set(changes) - set(RESUMABLE_SETTINGS)) + (["config"] if config_file else [])
        if refused:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in refused)
            raise InputError(f"--resume continues a run with its own settings; drop {flags}")
    configs = {}
    for cv in folds:
        if resume:
            run = latest_resumable_run(output, stage.name, cv)
            recorded = read_config(run).get("dataset")
            if recorded and Path(recorded) != Path(dataset_root).resolve():
                logger.warning("%s was trained on %s; continuing on %s", run, recorded, Path(dataset_root).resolve())
            configs[cv] = resumed_config(stage, run, **changes)
        else:
            default = config_from_file(stage, config_file) if config_file else stage.config_type()
            configs[cv] = replace(default, training=replace(default.training, **changes))
    return configs


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
    multi_worker: bool = False,
) -> Path:
    """Train (or with `resume`, continue the newest run of) fold `cv`; returns the run folder.

    `config` defaults to the stage's paper settings. On resume, pass the run's own configuration
    (`resumed_config`, or `fold_configs`), so that the network and the data are the ones its checkpoints were made
    with. Across workers (`multi_worker`, or a `TF_CONFIG` naming several; `distribution`), every worker calls this
    with the same arguments: the chief chooses and writes the run folder.
    """
    config = config if config is not None else stage.config_type()
    stage.contract(config)  # a network that inference could not run is refused before hours of training
    dataset = FlareDataset(Path(dataset_root))
    task = stage.task(dataset, cv, config)
    # the concrete precision goes into config.json, so a resumed run keeps it on any machine
    config = replace(config, training=replace(config.training, precision=training_precision(config.training.precision)))
    strategy = training_strategy(devices, multi_worker=multi_worker)
    run = None
    if worker_role(strategy).chief:
        run = latest_resumable_run(output, stage.name, cv) if resume else new_run_folder(output, stage.name, cv)
    run = agree_on_path(strategy, run)
    record = {"stage": stage.name, "cv": cv, "dataset": str(dataset.root.resolve()), "versions": versions()}
    record.update(to_record(config))
    trainer = Trainer(task, config.training, run, record=record, resume=resume, progress=progress, strategy=strategy)
    return trainer.run()


def train_folds(
    stage: Stage,
    dataset_root: str | Path,
    output: str | Path,
    folds: Sequence[int],
    *,
    training_changes: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    multi_worker: bool = False,
) -> list[Path]:
    """Train (or resume) each fold in turn, as `efficientscn train` does; returns the run folders."""
    configs = fold_configs(
        stage, dataset_root, output, folds, training_changes=training_changes, config_file=config_file, resume=resume
    )
    runs = []
    for cv, config in configs.items():
        runs.append(
            train_stage(
                stage, dataset_root, output, cv, config, resume=resume, progress=progress, multi_worker=multi_worker
            )
        )
        logger.info("fold %d done: %s", cv, runs[-1])
    return runs


def export_stage(
    stage: Stage, run: str | Path, iteration: int | None, output: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the averaged network of a run's checkpoint (None: the latest) as the stage's SavedModel, with the input
    contract of the run's data configuration."""
    refuse_existing(output, overwrite=overwrite)  # before the minutes of loading and tracing
    config = resumed_config(stage, Path(run))
    iteration = checkpoint_iteration(run, iteration)
    model = load_averaged_model(run, iteration, lambda: stage.model.build(config.network))
    source = {"run": str(Path(run).resolve()), "iteration": iteration}
    return stage.model.save(
        model,
        config.network,
        output,
        contract=stage.contract(config),
        overwrite=overwrite,
        source=source,
    )
