"""The two stages as training sees them: the model spec, the run configuration and the training task of each.

Stage 2 is "segmentation" (its run folders, models subfolder and SavedModel), with "scn" accepted where users
type it. No TensorFlow here: a stage's task is imported when a run starts, so the command line reads the stages,
their names and defaults without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from efficientscn.errors import InputError
from efficientscn.model import specs
from efficientscn.model.contract import InputContract
from efficientscn.model.specs import ModelSpec, StageName
from efficientscn.train.config import LocalizationRunConfig, SegmentationRunConfig, TrainingConfig

if TYPE_CHECKING:
    from efficientscn.data.layout import FlareDataset
    from efficientscn.train.loop import TrainingTask


class RunConfig(Protocol):
    """A stage's run configuration: a frozen dataclass with at least these parts, saved as the run's config.json."""

    data: Any
    network: Any
    training: TrainingConfig


@dataclass(frozen=True)
class Stage:
    """What a stage brings to a run: its model, its run configuration type and its training task."""

    model: ModelSpec
    config_type: type
    task: Callable[[FlareDataset, int, Any], TrainingTask]
    """(dataset, fold, run configuration) -> the training task."""
    reads: str
    """The dataset files its samples are made of, for help texts."""
    test_writes: str
    """What its test during training writes, for help texts."""
    aliases: tuple[str, ...] = ()
    """Other names users may type for it."""

    @property
    def name(self) -> StageName:
        return self.model.name

    def contract(self, config: RunConfig) -> InputContract:
        """The input contract of a network trained with `config`, recorded in its export; InputError if inference
        could not honour it."""
        try:
            return config.data.input_contract()
        except ValueError as error:
            raise InputError(f"the {self.name} data settings give a network inference cannot run: {error}") from error


def _localization_task(dataset: FlareDataset, cv: int, config: LocalizationRunConfig) -> TrainingTask:
    from efficientscn.train.localization import LocalizationTask

    return LocalizationTask(dataset, cv, config.data, config.network)


def _segmentation_task(dataset: FlareDataset, cv: int, config: SegmentationRunConfig) -> TrainingTask:
    from efficientscn.train.segmentation import SegmentationTask

    return SegmentationTask(dataset, cv, config.data, config.network, config.loss)


LOCALIZATION = Stage(
    model=specs.LOCALIZATION_SPEC,
    config_type=LocalizationRunConfig,
    task=_localization_task,
    reads="TrainingImg_small/, TrainingMask_small/, setup/cv/",
    test_writes="masks, boxes.csv",
)
SEGMENTATION = Stage(
    model=specs.SEGMENTATION_SPEC,
    config_type=SegmentationRunConfig,
    task=_segmentation_task,
    reads="TrainingImg/, TrainingMask/, setup/landmark_bb.csv, setup/cv/",
    test_writes="label maps on the CT grid, metrics.csv and summary.json with Dice and NSD per organ",
    aliases=("scn",),
)
STAGES: tuple[Stage, ...] = (LOCALIZATION, SEGMENTATION)


def stage_named(name: str) -> Stage:
    """The stage called `name` or one of its aliases ("scn" for "segmentation")."""
    for stage in STAGES:
        if name == stage.name or name in stage.aliases:
            return stage
    raise ValueError(f"no stage {name!r}; the stages are {', '.join(stage.name for stage in STAGES)}")
