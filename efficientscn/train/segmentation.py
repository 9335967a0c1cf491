"""Stage 2 as a training task: the SpatialConfiguration-Net, its loss, its samples and its test during training.

Loss: generalized Dice on the combined normalised probabilities (all 5 labels) + sigmoid cross-entropy on the
local-appearance logits + sigmoid cross-entropy on the spatial-configuration logits (weights from `SegmentationLoss`,
1 each as the original) + the loop's L2 term. The test segments each test case in its ground-truth ROI (no
augmentation), resamples the probabilities linearly onto the CT's grid, takes the argmax, writes
`<case>.nii.gz`, and scores Dice and NSD per organ with the FLARE21 metrics (`metrics.csv`, `summary.json`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import SimpleITK as sitk
import tensorflow as tf
from tqdm import tqdm

from efficientscn.data.layout import FlareDataset
from efficientscn.data.segmentation import SegmentationDataConfig, SegmentationSamples
from efficientscn.data.setup_files import fold_ids
from efficientscn.errors import InputError
from efficientscn.evaluate import METRICS, Evaluation, write_evaluation
from efficientscn.imaging.resample import labels_on_input
from efficientscn.imaging.write import write_label
from efficientscn.labels import NUM_LABELS, ORGAN_NAMES
from efficientscn.metrics import FLARE21_NSD_TOLERANCE_MM, flare_scores
from efficientscn.nn.config import SCNConfig
from efficientscn.nn.scn import build_scn
from efficientscn.train.config import SegmentationLoss
from efficientscn.train.loop import Predict
from efficientscn.train.losses import generalized_dice_loss, sigmoid_cross_entropy

logger = logging.getLogger(__name__)


@dataclass
class SegmentationTask:
    """The SCN trained on one fold of a FLARE-layout dataset."""

    dataset: FlareDataset
    cv: int
    data: SegmentationDataConfig
    network: SCNConfig
    loss: SegmentationLoss

    stage = "segmentation"
    loss_fields = ("loss", "dice", "local_cross_entropy", "spatial_cross_entropy")
    test_fields = tuple(f"{organ}_{metric}" for organ in ORGAN_NAMES.values() for metric in METRICS)

    def __post_init__(self) -> None:
        self.sample_source = SegmentationSamples(self.dataset.root, self.data)
        self.train_ids, self.test_ids = fold_ids(self.dataset, self.cv, small=False)
        cases = dict.fromkeys((*self.train_ids, *self.test_ids))  # in order, each once
        missing = [case for case in cases if case not in self.sample_source.boxes]
        if missing:  # found now, not hours into training in a loader worker
            raise InputError(
                f"{self.dataset.landmark_bb_csv}: no organ box for {len(missing)} case(s) of fold {self.cv}: "
                f"{', '.join(missing[:5])}"
            )
        self.sample_signature = {
            "image": tf.TensorSpec((None, None, None, 1), tf.float32),
            "label": tf.TensorSpec((None, None, None, NUM_LABELS), tf.uint8),
        }

    def build_model(self) -> keras.Model:
        return build_scn(self.network)

    def loss_terms(self, model: keras.Model, sample: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        outputs = model(sample["image"], training=True)
        labels = tf.cast(sample["label"], tf.float32)
        terms = {
            "dice": generalized_dice_loss(labels, outputs["probabilities"]),
            "local_cross_entropy": sigmoid_cross_entropy(labels, outputs["local_logits"]),
            "spatial_cross_entropy": sigmoid_cross_entropy(labels, outputs["spatial_logits"]),
        }
        weights = self.loss
        terms["loss"] = (
            weights.dice * terms["dice"]
            + weights.local_cross_entropy * terms["local_cross_entropy"]
            + weights.spatial_cross_entropy * terms["spatial_cross_entropy"]
        )
        return terms

    def test(self, predict: Predict, folder: Path, progress: bool) -> dict[str, float]:
        folder.mkdir(parents=True, exist_ok=True)
        evaluation = Evaluation(tolerance_mm=FLARE21_NSD_TOLERANCE_MM)
        for case in tqdm(self.test_ids, desc="test", leave=False, disable=not progress):
            evaluation.scores[case] = self._test_case(predict, case, folder)
        write_evaluation(evaluation, folder, overwrite=True)
        mean = evaluation.mean() or {}
        return {f"{organ}_{metric}": mean[organ][metric] for organ in mean for metric in METRICS}

    def _test_case(self, predict: Predict, case: str, folder: Path) -> dict:
        loaded, transform, sample = self.sample_source.test_sample(case)
        probabilities = predict(tf.constant(sample["image"][np.newaxis]))["probabilities"].numpy()[0]
        prediction = labels_on_input(probabilities, transform, loaded.spacing_xyz, loaded.label)
        write_label(prediction, folder / f"{case}.nii.gz", overwrite=True)
        return flare_scores(
            sitk.GetArrayViewFromImage(prediction),
            sitk.GetArrayViewFromImage(loaded.label),
            loaded.label.GetSpacing()[::-1],
        )
