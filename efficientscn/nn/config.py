"""The two networks' configurations: what an export records and inference rebuilds from (no TensorFlow here, so
the command line and the run configurations read them without importing it; `efficientscn.nn` builds them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from efficientscn.settings import renamed


@dataclass(frozen=True)
class LocalizationNetConfig:
    """Architecture of the localization network; the defaults are the original's (637,474 parameters)."""

    levels: int = 5
    filters: int = 32
    convs_per_block: int = 2
    dropout_rate: float = 0.1
    """Dropout after every U-Net convolution, in training."""
    leaky_relu_alpha: float = 0.1
    num_labels: int = 2
    l2_factor: float = 1.0
    """Factor of the L2 regulariser on the U-Net kernels (not the head); the loss scales it by 1e-6 again."""
    seed: int | None = None
    """Seed of the initial weights; None draws them at random."""

    @staticmethod
    def upgrade_record(record: Mapping[str, Any]) -> dict[str, Any]:
        """Exports and run folders written before `dropout` was named `dropout_rate`, as the SCN's."""
        return renamed(record, "dropout", "dropout_rate")


@dataclass(frozen=True)
class SCNConfig:
    """Architecture and regularisation of the SCN; the defaults are the original's (1,270,090 parameters)."""

    num_labels: int = 5
    local_levels: int = 5
    local_filters: int = 32
    spatial_levels: int = 4
    spatial_filters: int = 16
    convs_per_block: int = 2
    dropout_rate: float = 0.1
    """Dropout after every U-Net convolution, in training."""
    leaky_relu_alpha: float = 0.1
    spatial_downsample_factor: int = 4
    """Average pooling before the spatial sub-nets: 2 mm -> 8 mm."""
    salt_pepper_rate: float = 0.01
    salt_pepper_scales_voxels: tuple[int, ...] = (1, 2, 4, 8)
    """Salt-and-pepper scales in voxels of the pooled (8 mm) grid."""
    channel_dropout_rate: float = 0.25
    channel_dropout_passes: int = 2
    """How often the channel dropout is applied to the pooled local-appearance probabilities (docs/fidelity.md #7)."""
    image_dropout_rate: float = 0.5
    normalisation_epsilon: float = 1e-8
    """Added to the channel sum of the combined probabilities: 1e-8 in training, 1e-5 in the original's export."""
    l2_factor: float = 1.0
    """Factor of the L2 regulariser on the U-Net kernels (not the heads); the loss scales it by 1e-6 again."""
    seed: int | None = None
    """Seed of the initial weights; None draws them at random. Dropout and noise stay unseeded."""
