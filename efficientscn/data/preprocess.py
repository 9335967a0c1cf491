"""Dataset preprocessing as the original does it, plus the cv setup generator it lacked.

For every training case: the `_small` CT and mask (integer subsampling by 2 on axes finer than 3 mm, for cheap
localization loading) and the physical bounding box of all organs (`setup/landmark_bb.csv`). Then the cv split
files from the IDs on disk. Re-running skips what exists; a bad case is reported and the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from efficientscn.atomic import ensure_writable_folder
from efficientscn.batch import BatchReport, Outcome, run_batch
from efficientscn.data.layout import FlareDataset
from efficientscn.data.setup_files import (
    DEFAULT_FOLDS,
    DEFAULT_SEED,
    BoundingBox,
    read_landmark_bb,
    write_cv_setup,
    write_landmark_bb,
)
from efficientscn.errors import InputError
from efficientscn.imaging.geometry import grid_of, physical_bounding_box, shrink_factors
from efficientscn.imaging.read import read_label
from efficientscn.imaging.write import write_image_atomic
from efficientscn.model.contract import PAPER_LOCALIZATION
from efficientscn.stopping import stop_on_signals

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessConfig:
    """What `preprocess_dataset` does; the defaults are the original's, with every step switched on."""

    localization_spacing_mm: float = PAPER_LOCALIZATION.spacing_mm
    small_images: bool = True
    landmark_bb: bool = True
    cv_setup: bool = True
    folds: int = DEFAULT_FOLDS
    seed: int = DEFAULT_SEED
    overwrite: bool = False


def shrink_for_localization(
    image: sitk.Image, localization_spacing_mm: float = PAPER_LOCALIZATION.spacing_mm
) -> sitk.Image:
    """Subsample an image by 2 along every axis finer than half the localization spacing (SimpleITK Shrink).

    No smoothing and no interpolation: every second voxel is kept and the physical extent is preserved, so labels
    stay labels. This is all the original's preprocessing does to an image.
    """
    return sitk.Shrink(image, [int(f) for f in shrink_factors(image.GetSpacing(), localization_spacing_mm)])


def _read_case(dataset: FlareDataset, case: str, need_ct: bool) -> tuple[sitk.Image | None, sitk.Image]:
    """A training case's CT (if needed) and mask, refusing a missing mask or one on another grid."""
    if need_ct:
        return dataset.read_training_case(case)
    mask_path = dataset.training_mask(case)
    if not mask_path.is_file():
        raise InputError(f"{mask_path}: mask missing for {dataset.training_image(case)}")
    return None, read_label(mask_path)


class _CasePreprocessor:
    """Preprocess one case at a time, collecting organ boxes for the csv written at the end."""

    def __init__(self, dataset: FlareDataset, config: PreprocessConfig, boxes: dict[str, BoundingBox]) -> None:
        self.dataset = dataset
        self.config = config
        self.boxes = boxes

    def __call__(self, case: str) -> Outcome:
        dataset, config = self.dataset, self.config
        small_outputs = (dataset.training_image(case, small=True), dataset.training_mask(case, small=True))
        need_small = config.small_images and (config.overwrite or not all(p.exists() for p in small_outputs))
        need_box = config.landmark_bb and case not in self.boxes
        if not (need_small or need_box):
            return "skipped"
        ct, mask = _read_case(dataset, case, need_ct=need_small)
        if need_box:
            box = physical_bounding_box(sitk.GetArrayViewFromImage(mask) > 0, grid_of(mask))
            if box is None:
                raise InputError(f"{dataset.training_mask(case)}: mask has no organ voxels")
            self.boxes[case] = box
        if need_small:
            assert ct is not None
            for image, path in zip((ct, mask), small_outputs, strict=True):
                small = shrink_for_localization(image, config.localization_spacing_mm)
                write_image_atomic(small, path, overwrite=True)
        return "done"


def preprocess_dataset(
    root: str | Path, config: PreprocessConfig = PreprocessConfig(), progress: bool = True
) -> BatchReport:
    """Preprocess a dataset folder in FLARE layout (see `efficientscn.data.layout`).

    Writes the `_small` images and masks, `setup/landmark_bb.csv` (rows of cases already in it are kept unless
    `overwrite`, or unless the mask is newer than the csv) and the cv setup (only if none exists, unless
    `overwrite`). The cv setup is written only when every training case has its mask and was processed without
    error, so that no case silently drops out of the splits. Returns what happened per case; a problem with the
    cv setup is reported under the name "setup/cv". Raises `InputError` before any work when the folder, its
    training CTs or the number of folds cannot be used.
    """
    dataset = FlareDataset(Path(root))
    if not dataset.root.is_dir():
        raise InputError(f"{dataset.root}: {'not a folder' if dataset.root.exists() else 'no such folder'}")
    ensure_writable_folder(dataset.root)
    train_ids = dataset.training_ids()
    if not train_ids:
        raise InputError(f"{dataset.root / 'TrainingImg'}: no training CTs (*_0000.nii.gz) found")
    writes_cv_setup = config.cv_setup and (config.overwrite or not (dataset.cv_dir / "all_train.txt").exists())
    if writes_cv_setup and not 2 <= config.folds <= len(train_ids):
        raise InputError(f"{dataset.root}: cannot make {config.folds} cv folds from {len(train_ids)} training cases")
    boxes = _reusable_boxes(dataset, train_ids) if config.landmark_bb and not config.overwrite else {}
    known_boxes = dict(boxes)

    with stop_on_signals() as stop:
        report = run_batch(
            train_ids,
            _CasePreprocessor(dataset, config, boxes),
            name_of=str,
            description="preprocess",
            progress=progress,
            stop=stop,
        )

    if config.landmark_bb and (boxes.keys() != known_boxes.keys() or not dataset.landmark_bb_csv.exists()):
        write_landmark_bb(dataset.landmark_bb_csv, boxes, overwrite=True)
        logger.info("%s: %d organ boxes", dataset.landmark_bb_csv, len(boxes))
    if config.cv_setup:
        missing = (c for c in train_ids if not dataset.training_mask(c).is_file())
        problems = sorted({*report.failed, *report.not_done, *missing})
        if problems:
            report.failed["setup/cv"] = (
                f"cv setup not written: {len(problems)} training case(s) failed or have no mask "
                f"({', '.join(problems[:5])}); fix or remove them and run again"
            )
            logger.error("%s", report.failed["setup/cv"])
        else:
            write_cv_setup(
                dataset.cv_dir,
                train_ids,
                dataset.validation_ids(),
                folds=config.folds,
                seed=config.seed,
                overwrite=config.overwrite,
            )
    return report


def _reusable_boxes(dataset: FlareDataset, train_ids: list[str]) -> dict[str, BoundingBox]:
    """Boxes of `landmark_bb.csv` still valid: of a current training case whose mask is not newer than the csv."""
    csv_path = dataset.landmark_bb_csv
    if not csv_path.exists():
        return {}
    written = csv_path.stat().st_mtime
    current = set(train_ids)
    return {
        case: box
        for case, box in read_landmark_bb(csv_path).items()
        if case in current
        and dataset.training_mask(case).is_file()
        and dataset.training_mask(case).stat().st_mtime <= written
    }
