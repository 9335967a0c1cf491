"""The FLARE21 dataset folder layout that every stage reads, as one object instead of path strings.

<root>/TrainingImg/<id>_0000.nii.gz      training CTs          (train_000 ... train_360 in FLARE21)
<root>/TrainingMask/<id>.nii.gz          their labels (0..4)
<root>/ValidationImg/<id>_0000.nii.gz    unlabelled CTs        (validation_001 ... validation_050)
<root>/TrainingImg_small/, TrainingMask_small/   written by preprocessing (same names)
<root>/setup/cv/..., setup/landmark_bb.csv        written by preprocessing, or copied from the project
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.names import LABEL_SUFFIX, case_id
from efficientscn.imaging.read import read_ct, read_label, require_same_grid
from efficientscn.imaging.write import write_image_atomic
from efficientscn.phantom import PhantomGrid, make_phantom

IMAGE_SUFFIX = "_0000.nii.gz"
"""FLARE names a CT `<case>_0000.nii.gz` (channel 0) and its label `<case>.nii.gz` (LABEL_SUFFIX)."""


@dataclass(frozen=True)
class FlareDataset:
    """Paths of one dataset folder in FLARE layout."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def setup_dir(self) -> Path:
        return self.root / "setup"

    @property
    def landmark_bb_csv(self) -> Path:
        """Physical organ bounding box per training case (see `efficientscn.data.setup_files`)."""
        return self.setup_dir / "landmark_bb.csv"

    @property
    def cv_dir(self) -> Path:
        return self.setup_dir / "cv"

    def training_image(self, case: str, small: bool = False) -> Path:
        return self.root / ("TrainingImg_small" if small else "TrainingImg") / f"{case}{IMAGE_SUFFIX}"

    def training_mask(self, case: str, small: bool = False) -> Path:
        return self.root / ("TrainingMask_small" if small else "TrainingMask") / f"{case}{LABEL_SUFFIX}"

    def validation_image(self, case: str) -> Path:
        return self.root / "ValidationImg" / f"{case}{IMAGE_SUFFIX}"

    def read_training_case(self, case: str, small: bool = False) -> tuple[sitk.Image, sitk.Image]:
        """A training case's CT (int16) and mask (uint8), refusing a missing mask or one on another grid."""
        image_path, mask_path = self.training_image(case, small), self.training_mask(case, small)
        if not mask_path.is_file():
            raise InputError(f"{mask_path}: mask missing for {image_path}")
        mask, ct = read_label(mask_path), read_ct(image_path)
        require_same_grid(mask, mask_path, ct, f"its CT {image_path}")
        return ct, mask

    def training_ids(self) -> list[str]:
        """Sorted IDs of the CTs in TrainingImg (whether or not their mask exists)."""
        return _ids_in(self.root / "TrainingImg")

    def validation_ids(self) -> list[str]:
        """Sorted IDs of the CTs in ValidationImg; empty if the folder does not exist."""
        return _ids_in(self.root / "ValidationImg")


def _ids_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(case_id(p) for p in folder.iterdir() if p.name.endswith(IMAGE_SUFFIX) and not p.name.startswith("."))


def write_phantom_dataset(
    root: str | Path, cases: int, grid: PhantomGrid | None = None, *, max_shift_mm: float = 20.0, seed: int = 0
) -> list[str]:
    """A FLARE-layout dataset of `cases` phantoms (TrainingImg/, TrainingMask/) for training tests and benchmarks.

    Each case moves the anatomy by a random shift of up to `max_shift_mm` per axis and has its own noise, so
    that a network must find the organs rather than memorise one position. Returns the case IDs (train_000, ...).
    """
    dataset = FlareDataset(Path(root))
    grid = grid or PhantomGrid()
    rng = np.random.default_rng(seed)
    ids = [f"train_{index:03d}" for index in range(cases)]
    for index, case in enumerate(ids):
        shift = rng.uniform(-max_shift_mm, max_shift_mm, 3)
        ct, label = make_phantom(grid, shift_mm=shift, seed=seed + index)
        write_image_atomic(ct, dataset.training_image(case), overwrite=True)
        write_image_atomic(label, dataset.training_mask(case), overwrite=True)
    return ids
