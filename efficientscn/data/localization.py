"""Localization samples: the whole CT at 6 mm with the binary any-organ label, as the original's stage 1 sees it.

Per case: read the `_small` CT and mask (see preprocessing), smooth the CT with a Gaussian of sigma 3 mm, and, for
training only, subsample it further by floor(6 mm / spacing) per axis. The output grid has 6 mm voxels and, per
axis, the smallest valid size strictly greater than the CT's extent in voxels (x, y in {32, 48, 64, 80}, z in
{32, 48, ..., 256}); the CT centre maps to the grid centre. Training samples go through the random spatial and
intensity augmentation; test samples only through the /2048 intensity scaling and clamp.

No TensorFlow here: the sample source runs in the loader's worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from efficientscn.augment import (
    IntensityAugmentConfig,
    SpatialAugmentConfig,
    sample_transform,
)
from efficientscn.data.samples import SampleSource, smooth_ct
from efficientscn.imaging.geometry import valid_sizes_per_axis
from efficientscn.model.contract import PAPER_LOCALIZATION, InputContract
from efficientscn.settings import older_valid_sizes


@dataclass(frozen=True)
class LocalizationDataConfig:
    """How localization samples are made; the defaults are the paper's."""

    spacing_mm: float = PAPER_LOCALIZATION.spacing_mm
    valid_sizes_zyx: tuple[tuple[int, ...], ...] = PAPER_LOCALIZATION.valid_sizes_zyx
    """The sizes the network takes along z, y and x, as in the input contract."""
    smoothing_sigma_mm: float = 3.0
    """Training only: inference localizes on the unsmoothed CT, as the original (docs/fidelity.md #3)."""
    training_shrink: bool = True
    small_images: bool = True
    spatial: SpatialAugmentConfig = field(default_factory=SpatialAugmentConfig)
    intensity: IntensityAugmentConfig = field(default_factory=IntensityAugmentConfig)

    @staticmethod
    def upgrade_record(record: Mapping[str, Any]) -> dict[str, Any]:
        """Run folders and --config files written before the valid sizes were one setting, `valid_sizes_zyx`."""
        return older_valid_sizes(
            record, {"valid_sizes_z": (0,), "valid_sizes_xy": (1, 2)}, PAPER_LOCALIZATION.valid_sizes_zyx
        )

    def input_contract(self) -> InputContract:
        """The input the network trained on these samples expects at inference (unsmoothed, docs/fidelity.md #3)."""
        return replace(
            PAPER_LOCALIZATION,
            spacing_mm=self.spacing_mm,
            valid_sizes_zyx=self.valid_sizes_zyx,
            intensity_scale_hu=1 / self.intensity.scale,
        )


def physical_extent_mm(image: sitk.Image) -> np.ndarray:
    """The extent (x, y, z) in mm of an image along the physical axes (exact for axis-aligned directions)."""
    direction = np.abs(np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3))
    return direction @ (np.asarray(image.GetSize(), dtype=np.float64) * np.asarray(image.GetSpacing()))


def localization_size(image: sitk.Image, config: LocalizationDataConfig) -> tuple[int, int, int]:
    """The network grid size (x, y, z) for a CT: per axis the valid size strictly greater than ceil(extent / 6 mm).

    The extent is taken along the physical axes, where the original takes it in index order (docs/fidelity.md #21):
    the same for axial CTs, right for a CT whose index axes are permuted.
    """
    voxels = [math.ceil(e / config.spacing_mm) for e in physical_extent_mm(image)]
    valid = config.valid_sizes_zyx[::-1]  # x, y, z
    return valid_sizes_per_axis(voxels, valid)  # type: ignore[return-value]


def any_organ_one_hot(label_zyx: np.ndarray) -> np.ndarray:
    """(z, y, x) labels 0..4 -> (z, y, x, 2) uint8 one-hot of (background, any organ)."""
    organ = label_zyx > 0
    return np.stack([~organ, organ], axis=-1).astype(np.uint8)


@dataclass(frozen=True)
class LocalizationCase:
    """One case ready for sampling: the smoothed CT, its label, and the network grid."""

    case: str
    image: sitk.Image
    label: sitk.Image
    size_xyz: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]


class LocalizationSamples(SampleSource[LocalizationCase]):
    """Localization samples of the cases of one dataset folder (picklable, for the loader's workers)."""

    config: LocalizationDataConfig

    def __init__(self, dataset_root: str | Path, config: LocalizationDataConfig = LocalizationDataConfig()) -> None:
        super().__init__(dataset_root, config)

    def load(self, case: str, *, training: bool) -> LocalizationCase:
        """Read and smooth a case; for training also subsample the CT by floor(spacing_mm / spacing) per axis.

        The grid size comes from the CT as it is sampled, as the original: for training from the subsampled CT,
        whose extent Shrink's floor can make up to a voxel shorter (63 voxels of 3 mm: 189 mm, 48 at 6 mm, for
        testing; 31 of 6 mm: 186 mm, 32, for training).
        """
        config = self.config
        ct, label = self.dataset.read_training_case(case, small=config.small_images)
        image = smooth_ct(ct, config.smoothing_sigma_mm)
        if training and config.training_shrink:
            factors = [max(1, int(config.spacing_mm // s)) for s in ct.GetSpacing()]
            image = sitk.Shrink(image, factors)
        size = localization_size(image, config)
        return LocalizationCase(case, image, label, size, (config.spacing_mm,) * 3)  # type: ignore[arg-type]

    def transform(self, loaded: LocalizationCase, rng: np.random.Generator | None = None) -> sitk.Transform:
        """The CT centre to the grid centre; with `rng`, randomly augmented (the `spatial` config)."""
        spatial = self.config.spatial if rng is not None else None
        return sample_transform(loaded.image, loaded.size_xyz, loaded.spacing_xyz, spatial, rng)

    def one_hot(self, label_zyx: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        return any_organ_one_hot(label_zyx)
