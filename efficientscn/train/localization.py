"""Stage 1 as a training task: the localization U-Net, its Dice loss, its samples and its test during training.

The test predicts each test case on its unaugmented 6 mm sample, resamples the logits linearly back onto the
case's image and takes the argmax, scores the organ Dice against the mask (1 when both are empty, the FLARE rule),
and maps the network-space box of the predicted foreground through the sample transform into physical mm.
Per test: `<case>.nii.gz` masks (NIfTI like every label this project writes, where the original wrote .mha) and
`boxes.csv` with a header: id, dice_organ, then the box as xmin,ymin,zmin,xmax,ymax,zmax (mm, as landmark_bb.csv;
NaN where nothing was predicted).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import SimpleITK as sitk
import tensorflow as tf
from tqdm import tqdm

from efficientscn.atomic import write_text_atomic
from efficientscn.data.layout import FlareDataset
from efficientscn.data.localization import LocalizationDataConfig, LocalizationSamples
from efficientscn.data.setup_files import fold_ids
from efficientscn.imaging.geometry import bounding_box_index, box_corners
from efficientscn.imaging.resample import labels_on_input
from efficientscn.imaging.write import write_label
from efficientscn.metrics import dice_coefficient
from efficientscn.nn.config import LocalizationNetConfig
from efficientscn.nn.localization import build_localization_net
from efficientscn.train.loop import Predict
from efficientscn.train.losses import generalized_dice_loss_from_logits

logger = logging.getLogger(__name__)


@dataclass
class LocalizationTask:
    """The localization network trained on one fold of a FLARE-layout dataset."""

    dataset: FlareDataset
    cv: int
    data: LocalizationDataConfig
    network: LocalizationNetConfig

    stage = "localization"
    loss_fields = ("loss",)
    test_fields = ("dice_organ", "cases")

    def __post_init__(self) -> None:
        self.sample_source = LocalizationSamples(self.dataset.root, self.data)
        self.train_ids, self.test_ids = fold_ids(self.dataset, self.cv, small=self.data.small_images)
        labels = self.network.num_labels
        self.sample_signature = {
            "image": tf.TensorSpec((None, None, None, 1), tf.float32),
            "label": tf.TensorSpec((None, None, None, labels), tf.uint8),
        }

    def build_model(self) -> keras.Model:
        return build_localization_net(self.network)

    def loss_terms(self, model: keras.Model, sample: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        logits = model(sample["image"], training=True)
        return {"loss": generalized_dice_loss_from_logits(sample["label"], logits)}

    def test(self, predict: Predict, folder: Path, progress: bool) -> dict[str, float]:
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for case in tqdm(self.test_ids, desc="test", leave=False, disable=not progress):
            rows.append(self._test_case(predict, case, folder))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["id", "dice_organ", "xmin", "ymin", "zmin", "xmax", "ymax", "zmax"])
        writer.writerows(rows)
        write_text_atomic(folder / "boxes.csv", text.getvalue(), overwrite=True)
        return {"dice_organ": float(np.mean([row[1] for row in rows])), "cases": float(len(rows))}

    def _test_case(self, predict: Predict, case: str, folder: Path) -> list:
        loaded, transform, sample = self.sample_source.test_sample(case)
        logits = predict(tf.constant(sample["image"][np.newaxis])).numpy()[0]
        mask = labels_on_input(logits, transform, loaded.spacing_xyz, loaded.label)
        write_label(mask, folder / f"{case}.nii.gz", overwrite=True)
        dice = dice_coefficient(sitk.GetArrayViewFromImage(mask) > 0, sitk.GetArrayViewFromImage(loaded.label) > 0)
        box = network_box_mm(np.argmax(logits, axis=-1) > 0, loaded.spacing_xyz, transform)
        return [case, dice, *(box if box is not None else [float("nan")] * 6)]


def network_box_mm(
    mask_zyx: np.ndarray, spacing_xyz: tuple[float, ...], transform: sitk.Transform
) -> list[float] | None:
    """The physical box (xmin, ymin, zmin, xmax, ymax, zmax) mm of a network-space mask mapped onto the input.

    The corners of the foreground's voxel-centre box on the network grid (origin 0, identity direction) are
    mapped through the sample transform (output -> input points); None for an empty mask.
    """
    box = bounding_box_index(mask_zyx)
    if box is None:
        return None
    corners_mm = box_corners(box[0][::-1], box[1][::-1]) * np.asarray(spacing_xyz)  # network grid: origin 0, identity
    points = np.array([transform.TransformPoint(tuple(p)) for p in corners_mm])
    return [*points.min(axis=0).tolist(), *points.max(axis=0).tolist()]
