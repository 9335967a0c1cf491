"""SCN samples: the organ region of a full-resolution CT at 2 mm and its labels, as the original's stage 2 sees it.

Per case: read the full-resolution CT and mask (not the `_small` ones), smooth the CT with a Gaussian of sigma
1 mm, and take the region of interest (ROI) from the ground-truth organ box of `setup/landmark_bb.csv`, widened by
32 mm per side. The output grid has 2 mm voxels and, per axis, the smallest valid size strictly greater than the
ROI's extent in voxels (x, z in {32, ..., 160}, y in {32, ..., 128}, steps of 32); the ROI centre maps to the grid
centre, zoomed out uniformly where the ROI exceeds the largest grid. Training samples go through the random spatial
and intensity augmentation (no gamma) and label smoothing; test samples only through the /2048 scaling and clamp.

No TensorFlow here: the sample source runs in the loader's worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from efficientscn.augment import (
    IntensityAugmentConfig,
    SpatialAugmentConfig,
    sample_transform,
)
from efficientscn.data.samples import SampleSource, smooth_ct
from efficientscn.data.setup_files import BoundingBox, read_landmark_bb
from efficientscn.errors import InputError
from efficientscn.imaging.geometry import bounding_box_index, valid_sizes_per_axis
from efficientscn.labels import NUM_LABELS
from efficientscn.model.contract import PAPER_SEGMENTATION, InputContract
from efficientscn.settings import older_valid_sizes


@dataclass(frozen=True)
class SegmentationDataConfig:
    """How SCN samples are made; the defaults are the paper's (sizes in voxels, lengths in mm)."""

    spacing_mm: float = PAPER_SEGMENTATION.spacing_mm
    valid_sizes_zyx: tuple[tuple[int, ...], ...] = PAPER_SEGMENTATION.valid_sizes_zyx
    """The sizes the network takes along z, y and x, as in the input contract."""
    roi_margin_mm: float = 32.0
    """Kept as the original (docs/fidelity.md #2): training sees the ground-truth box + 32 mm, inference the
    predicted box + 10 mm grown to a valid size; the trained networks expect this context, and both margins are
    what the paper's results used."""
    smoothing_sigma_mm: float = PAPER_SEGMENTATION.smoothing_sigma_mm
    label_smoothing_sigma_voxels: float = 1.0
    spatial: SpatialAugmentConfig = field(default_factory=SpatialAugmentConfig)
    intensity: IntensityAugmentConfig = field(default_factory=lambda: IntensityAugmentConfig(gamma_range=None))

    @staticmethod
    def upgrade_record(record: Mapping[str, Any]) -> dict[str, Any]:
        """Run folders and --config files written before the valid sizes were one setting, `valid_sizes_zyx`."""
        return older_valid_sizes(
            record,
            {"valid_sizes_z": (0,), "valid_sizes_y": (1,), "valid_sizes_x": (2,)},
            PAPER_SEGMENTATION.valid_sizes_zyx,
        )

    def input_contract(self) -> InputContract:
        """The input the network trained on these samples expects at inference: the box at this spacing and valid
        sizes, smoothed as in training (the 32 mm margin is training's; inference adds its own, docs/fidelity.md #2)."""
        return InputContract(
            spacing_mm=self.spacing_mm,
            valid_sizes_zyx=self.valid_sizes_zyx,
            smoothing_sigma_mm=self.smoothing_sigma_mm,
            intensity_scale_hu=1 / self.intensity.scale,
        )


@dataclass(frozen=True)
class SegmentationRoi:
    """Where a case's network grid lies: ROI centre (mm, physical xyz), grid size (voxels, xyz), zoom-out factor."""

    center_xyz: tuple[float, float, float]
    size_xyz: tuple[int, int, int]
    scale: float


def segmentation_roi(
    box_min_xyz: Sequence[float], box_max_xyz: Sequence[float], config: SegmentationDataConfig
) -> SegmentationRoi:
    """The network grid of an organ box (min and max corners in mm, physical xyz, extreme voxel centres).

    The ROI is the box widened by `roi_margin_mm` per side. Its extent in voxels (ROI mm / `spacing_mm`) gives
    per axis the smallest valid size strictly greater than its ceiling (an exact fit moves on, docs/fidelity.md #1),
    capped at the largest valid size. Where the ROI is larger than that, the grid zooms out uniformly by
    scale = max_i(floor(voxels_i) / largest valid size_i) (at least 1), the factor `sample_transform` takes as
    `fixed_scale`, so the whole ROI still fits.
    """
    low, high = np.asarray(box_min_xyz, dtype=np.float64), np.asarray(box_max_xyz, dtype=np.float64)
    if low.shape != (3,) or high.shape != (3,) or not np.all(high >= low):
        raise ValueError(f"expected box corners min <= max, xyz; got {low} and {high}")
    # docs/fidelity.md #23: rounded to 1e-6 voxels so that decimal noise of the csv's millimetres cannot move a
    # ceiling or floor
    voxels = np.round((high - low + 2 * config.roi_margin_mm) / config.spacing_mm, 6)
    valid = config.valid_sizes_zyx[::-1]  # x, y, z
    size = valid_sizes_per_axis([math.ceil(v) for v in voxels], valid)
    scale = max(1.0, *(math.floor(v) / max(sizes) for v, sizes in zip(voxels, valid, strict=True)))
    # docs/fidelity.md #22: the centre is the middle of the box, (min + max) / 2. The original computes
    # start + (extent - 1) / 2, which is 0.5 mm lower per axis: a voxel-index "- 1" applied to millimetres. Half a
    # millimetre is a quarter of an output voxel and far below the ±20 mm translation augmentation, and the exact
    # middle is what inference centres a predicted box on, so training and inference agree.
    center = (low + high) / 2
    return SegmentationRoi(tuple(float(c) for c in center), size, scale)  # type: ignore[arg-type]


def smooth_labels(label_zyx: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """Label smoothing: each label's indicator blurred by a Gaussian of `sigma_voxels`, then the argmax per voxel.

    Removes isolated voxels and rounds jagged borders of a nearest-neighbour-resampled label map. The Gaussian
    repeats edge voxels beyond the border (skimage's default, as the original used) and is cut at 4 sigma. Returns
    uint8 labels, same shape (zyx); background wins ties. The same result, computed faster: only the organs present
    are blurred, only within their box plus the kernel radius (outside, every organ's blur is 0), and the background's
    blur is 1 minus theirs (the blurred indicators sum to 1).
    """
    box = bounding_box_index(label_zyx > 0)
    if sigma_voxels <= 0 or box is None:
        return label_zyx.astype(np.uint8)
    radius = int(4 * sigma_voxels + 0.5)  # scipy's kernel radius at truncate=4
    window = tuple(
        slice(max(0, int(start) - radius), min(n, int(end) + radius + 1))
        for start, end, n in zip(*box, label_zyx.shape, strict=True)
    )
    crop = label_zyx[window]
    organs = np.unique(crop[crop > 0])
    blurred = np.stack(
        [ndimage.gaussian_filter((crop == v).astype(np.float32), sigma_voxels, mode="nearest") for v in organs]
    )
    best = np.argmax(blurred, axis=0)
    organ_wins = np.take_along_axis(blurred, best[np.newaxis], axis=0)[0] > 1 - blurred.sum(axis=0)
    smoothed = np.zeros(label_zyx.shape, dtype=np.uint8)
    smoothed[window] = np.where(organ_wins, organs.astype(np.uint8)[best], 0)
    return smoothed


def label_one_hot(label_zyx: np.ndarray) -> np.ndarray:
    """(z, y, x) labels 0..4 -> (z, y, x, 5) uint8 one-hot (background, liver, kidney, spleen, pancreas)."""
    return np.eye(NUM_LABELS, dtype=np.uint8)[label_zyx]


@dataclass(frozen=True)
class SegmentationCase:
    """One case ready for sampling: the smoothed full-resolution CT (float32 HU), its label map and its ROI."""

    case: str
    image: sitk.Image
    label: sitk.Image
    roi: SegmentationRoi
    spacing_xyz: tuple[float, float, float]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """The network grid: the ROI's."""
        return self.roi.size_xyz


class SegmentationSamples(SampleSource[SegmentationCase]):
    """SCN samples of the cases of one dataset folder (picklable, for the loader's workers).

    The organ boxes of `setup/landmark_bb.csv` are read once, on first use.
    """

    config: SegmentationDataConfig

    def __init__(self, dataset_root: str | Path, config: SegmentationDataConfig = SegmentationDataConfig()) -> None:
        super().__init__(dataset_root, config)

    @cached_property
    def boxes(self) -> dict[str, BoundingBox]:
        """The organ box (min_xyz, max_xyz in mm) of every case in `setup/landmark_bb.csv`."""
        path = self.dataset.landmark_bb_csv
        try:
            return read_landmark_bb(path)
        except OSError as error:
            raise InputError(f"{path}: cannot read the organ boxes ({error.strerror or error})") from error

    def roi(self, case: str) -> SegmentationRoi:
        """The network grid of a case, from its organ box; InputError naming the csv if the case is not in it."""
        box = self.boxes.get(case)
        if box is None:
            raise InputError(f"{self.dataset.landmark_bb_csv}: no organ box for case {case}")
        return segmentation_roi(*box, self.config)

    def load(self, case: str, *, training: bool = True) -> SegmentationCase:
        """Read a case at full resolution and smooth its CT by `smoothing_sigma_mm`; the mask must share its grid.
        Training and tests load a case alike."""
        roi = self.roi(case)  # before the images: a case without a box fails at once
        ct, label = self.dataset.read_training_case(case)
        spacing = (self.config.spacing_mm,) * 3
        return SegmentationCase(case, smooth_ct(ct, self.config.smoothing_sigma_mm), label, roi, spacing)  # type: ignore[arg-type]

    def transform(self, loaded: SegmentationCase, rng: np.random.Generator | None = None) -> sitk.Transform:
        """The output -> input transform of a case: ROI centre to grid centre, zoomed out by the ROI's scale.

        With `rng` it is also randomly augmented (the `spatial` config); without, it is affine and invertible.
        """
        roi = loaded.roi
        spatial = self.config.spatial if rng is not None else None
        return sample_transform(
            loaded.image,
            roi.size_xyz,
            loaded.spacing_xyz,
            spatial,
            rng,
            center_xyz=roi.center_xyz,
            fixed_scale=roi.scale,
        )

    def one_hot(self, label_zyx: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Training labels are smoothed first (`label_smoothing_sigma_voxels`). The test label is not
        (docs/fidelity.md #24), because the original validates against the ground truth on the CT's own grid; the test
        sample's label is informative only, and unsmoothed it is the exact resampled ground truth."""
        if rng is not None:
            label_zyx = smooth_labels(label_zyx, self.config.label_smoothing_sigma_voxels)
        return label_one_hot(label_zyx)
