"""The SCN through the run machinery on a real CT: its loss, a short run with its test, and its SavedModel.

ts_example_ct at its own organ box, sampled at 8 mm instead of 2 mm (a 64x64x32 network input) so that a run of
a few iterations takes seconds on a CPU; the plumbing is the same at every spacing.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from efficientscn.augment import IntensityAugmentConfig, SpatialAugmentConfig
from efficientscn.data.layout import FlareDataset
from efficientscn.data.segmentation import SegmentationDataConfig, SegmentationSamples
from efficientscn.errors import InputError
from efficientscn.evaluate import CSV_NAME, SUMMARY_NAME
from efficientscn.labels import ORGAN_NAMES
from efficientscn.model import specs
from efficientscn.nn.config import SCNConfig
from efficientscn.settings import from_record
from efficientscn.train.checkpoints import load_averaged_model
from efficientscn.train.config import SegmentationLoss, SegmentationRunConfig, TrainingConfig
from efficientscn.train.run_folder import checkpoint_iterations, read_config
from efficientscn.train.runs import resumed_config, train_stage
from efficientscn.train.segmentation import SegmentationTask
from efficientscn.train.stages import SEGMENTATION

from helpers import REPO_ROOT

COARSE = SegmentationRunConfig(
    data=SegmentationDataConfig(spacing_mm=8.0),
    training=TrainingConfig(
        learning_rate=1e-3, max_iter=4, test_iter=4, snapshot_iter=4, log_iter=2, ema_decay=0.9, workers=0
    ),
)


def test_scn_loss_is_the_weighted_sum_of_dice_and_both_cross_entropies(one_case_dataset):
    sample = SegmentationSamples(one_case_dataset, COARSE.data).sample("train_000", np.random.default_rng(0))
    batch = {key: tf.constant(value[np.newaxis]) for key, value in sample.items()}
    task = SegmentationTask(
        FlareDataset(one_case_dataset), 1, COARSE.data, SCNConfig(seed=1), SegmentationLoss(1.0, 2.0, 3.0)
    )
    keras.utils.set_random_seed(0)
    terms = {k: float(v) for k, v in task.loss_terms(task.build_model(), batch).items()}
    expected = terms["dice"] + 2.0 * terms["local_cross_entropy"] + 3.0 * terms["spatial_cross_entropy"]
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)
    assert 0 < terms["dice"] <= 1 and terms["local_cross_entropy"] > 0 and terms["spatial_cross_entropy"] > 0


@pytest.fixture(scope="module")
def scn_run(one_case_dataset, tmp_path_factory) -> Path:
    return train_stage(SEGMENTATION, one_case_dataset, tmp_path_factory.mktemp("runs"), 1, COARSE, progress=False)


def test_a_short_scn_run_writes_checkpoints_and_scores_its_test_case_on_the_ct_grid(scn_run, one_case_dataset):
    assert scn_run.parent.parent.name == "segmentation" and checkpoint_iterations(scn_run) == [4]
    with (scn_run / "train.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["iteration"] for row in rows] == ["2", "4"]
    terms = ("total", "dice", "local_cross_entropy", "spatial_cross_entropy")
    assert all(np.isfinite(float(row[term])) for row in rows for term in terms)
    with (scn_run / "test.csv").open(newline="") as file:
        (test_row,) = csv.DictReader(file)
    assert set(test_row) == {"iteration", *(f"{o}_{m}" for o in ORGAN_NAMES.values() for m in ("dice", "nsd"))}
    folder = scn_run / "test" / "iter_4"
    assert (folder / CSV_NAME).is_file() and (folder / SUMMARY_NAME).is_file()
    written = sitk.ReadImage(str(folder / "train_000.nii.gz"))
    ct = sitk.ReadImage(str(FlareDataset(one_case_dataset).training_image("train_000")))
    assert written.GetSize() == ct.GetSize() and written.GetSpacing() == pytest.approx(ct.GetSpacing())
    assert written.GetOrigin() == pytest.approx(ct.GetOrigin())
    assert sitk.GetArrayViewFromImage(written).max() <= 4
    assert read_config(scn_run)["training"]["learning_rate"] == 1e-3


def test_exported_scn_reloads_and_gives_the_in_memory_probabilities(scn_run, one_case_dataset, tmp_path):
    output = tmp_path / "segmentation"
    script = REPO_ROOT / "scn" / "main_create_model.py"
    result = subprocess.run(
        [sys.executable, str(script), "--run", str(scn_run), "--iter", "4", "--output", str(output), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    serve = tf.saved_model.load(str(output)).signatures["serving_default"]
    _, _, sample = SegmentationSamples(one_case_dataset, COARSE.data).test_sample("train_000")
    image = np.transpose(sample["image"], (3, 0, 1, 2))[np.newaxis].astype(np.float16)
    exported = serve(image=tf.constant(image))["output_0"].numpy()
    assert exported.dtype == np.float16 and exported.shape == (1, 5, *sample["image"].shape[:3])
    np.testing.assert_allclose(exported.astype(np.float32).sum(axis=1), 1.0, atol=5e-3)

    network = from_record(SCNConfig, read_config(scn_run)["network"])
    model = load_averaged_model(scn_run, 4, lambda: specs.SEGMENTATION_SPEC.build(network))
    in_memory = model(np.transpose(image.astype(np.float32), (0, 2, 3, 4, 1)), training=False)["probabilities"]
    # computed in float32 inside and rounded to float16 once at the end (docs/fidelity.md #31): within one float16
    # step at 1 (2^-10), where a float16 computation would stray further
    expected = np.transpose(in_memory.numpy(), (0, 4, 1, 2, 3))
    np.testing.assert_allclose(exported.astype(np.float32), expected, atol=2.0**-10)


@pytest.mark.slow  # half a minute: an SCN run resumed
def test_an_scn_run_resumes_from_its_checkpoint_in_the_same_folder(scn_run, one_case_dataset, tmp_path):
    copy = tmp_path / "segmentation" / "cv1" / scn_run.name
    shutil.copytree(scn_run, copy)
    config = resumed_config(SEGMENTATION, copy, max_iter=6)
    assert config.data == COARSE.data and config.training.learning_rate == 1e-3
    run = train_stage(SEGMENTATION, one_case_dataset, tmp_path, 1, config, resume=True, progress=False)
    assert run == copy and checkpoint_iterations(run) == [4, 6]
    with (run / "train.csv").open(newline="") as file:
        assert [row["iteration"] for row in csv.DictReader(file)] == ["2", "4", "6"]
    reader = tf.train.load_checkpoint(str(run / "weights" / "ckpt-6"))
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 6


@pytest.mark.slow
def test_a_short_cpu_training_overfits_the_real_case_to_organ_dice_above_0_8(one_case_dataset, tmp_path):
    """The whole stage learns: samples, network, loss, loop, test. One CT, no augmentation, 6 mm for speed."""
    still = SpatialAugmentConfig(translation_mm=0, rotation_rad=0, uniform_scale=0, axis_scale=0, deformation_mm=0)
    intensity = IntensityAugmentConfig(gamma_range=None, random_shift=0, random_scale=0)
    config = SegmentationRunConfig(
        data=SegmentationDataConfig(spacing_mm=6.0, spatial=still, intensity=intensity),
        training=TrainingConfig(
            learning_rate=1e-3, max_iter=160, test_iter=160, snapshot_iter=160, log_iter=20, ema_decay=0.9, workers=0
        ),
    )
    run = train_stage(SEGMENTATION, one_case_dataset, tmp_path, 1, config, progress=False)
    with (run / "test.csv").open(newline="") as file:
        (scores,) = csv.DictReader(file)
    for organ in ("liver", "kidney", "spleen"):
        assert float(scores[f"{organ}_dice"]) >= 0.8, scores


def test_a_fold_case_without_an_organ_box_is_refused_before_training(one_case_dataset, tmp_path):
    for name in ("TrainingImg", "TrainingMask"):
        (tmp_path / name).symlink_to(one_case_dataset / name)
    shutil.copytree(one_case_dataset / "setup", tmp_path / "setup")
    (tmp_path / "setup" / "landmark_bb.csv").write_text("train_999,0,0,0,1,1,1\n")
    with pytest.raises(InputError, match=r"landmark_bb\.csv: no organ box for 1 case\(s\) of fold 1: train_000"):
        SegmentationTask(FlareDataset(tmp_path), 1, COARSE.data, COARSE.network, COARSE.loss)
