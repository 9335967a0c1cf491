"""The run configurations of the two stages, saved as a run's config.json; the defaults are the paper's.

No TensorFlow here: the command line reads the defaults for its help texts without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from efficientscn.data.localization import LocalizationDataConfig
from efficientscn.data.segmentation import SegmentationDataConfig
from efficientscn.model.precision import Precision
from efficientscn.nn.config import LocalizationNetConfig, SCNConfig


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and bookkeeping settings; the defaults are the original localization network's."""

    learning_rate: float = 1e-5
    max_iter: int = 100_000
    snapshot_iter: int = 10_000
    test_iter: int = 10_000
    log_iter: int = 100
    reg_constant: float = 1e-6
    ema_decay: float = 0.999
    clip_factor: float = 5.0
    clip_initial_average: float = 10.0
    clip_rate: float = 0.01
    loss_scale_initial: float = 1.0
    loss_scale_growth_steps: int = 100
    precision: Precision = "auto"
    workers: int = 8
    queue_size: int = 16
    """Samples prefetched ahead of the network (the workers hold one more each)."""
    seed: int = 0


@dataclass(frozen=True)
class SegmentationLoss:
    """Weights of the SCN's loss terms; the original weighs all three 1."""

    dice: float = 1.0
    local_cross_entropy: float = 1.0
    spatial_cross_entropy: float = 1.0


@dataclass(frozen=True)
class LocalizationRunConfig:
    """Everything a localization run is made of; saved as the run's config.json."""

    data: LocalizationDataConfig = field(default_factory=LocalizationDataConfig)
    network: LocalizationNetConfig = field(default_factory=LocalizationNetConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


@dataclass(frozen=True)
class SegmentationRunConfig:
    """Everything an SCN run is made of; saved as the run's config.json. Training defaults are the SCN's."""

    data: SegmentationDataConfig = field(default_factory=SegmentationDataConfig)
    network: SCNConfig = field(default_factory=SCNConfig)
    loss: SegmentationLoss = field(default_factory=SegmentationLoss)
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(
            learning_rate=1e-4, loss_scale_initial=2.0**15, loss_scale_growth_steps=1000
        )
    )
