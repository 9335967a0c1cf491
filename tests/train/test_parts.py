"""The training loop's parts on their own: loss, gradient clipping, weight average, loss scale, run folders, config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientscn.data.localization import LocalizationDataConfig
from efficientscn.data.segmentation import SegmentationDataConfig
from efficientscn.errors import InputError
from efficientscn.model.contract import PAPER_LOCALIZATION
from efficientscn.model.folder import SHIPPED_MODELS
from efficientscn.model.savedmodel import METADATA_FILE
from efficientscn.nn.config import LocalizationNetConfig
from efficientscn.settings import from_record, to_record, with_changes
from efficientscn.train.clipping import AdaptiveGradientClipping
from efficientscn.train.config import LocalizationRunConfig, SegmentationRunConfig, TrainingConfig
from efficientscn.train.ema import WeightAverage
from efficientscn.train.loop import Trainer
from efficientscn.train.loss_scale import DynamicLossScale
from efficientscn.train.losses import generalized_dice_loss, generalized_dice_loss_from_logits, sigmoid_cross_entropy
from efficientscn.train.run_folder import CsvLog, checkpoint_iterations, new_run_folder
from efficientscn.train.runs import config_from_file
from efficientscn.train.stages import SEGMENTATION


def _two_organs_in_a_cube() -> np.ndarray:
    """32^3 labels: organ 1 a 16^3 cube (4096 voxels), organ 2 a 3^3 cube (27 voxels), background the other 28645."""
    labels = np.zeros((32, 32, 32), dtype=np.int64)
    labels[:16, :16, :16] = 1
    labels[-3:, -3:, -3:] = 2
    return labels


def _soft(predicted: np.ndarray, confidence: float, classes: int = 3) -> np.ndarray:
    """(1, z, y, x, C) probabilities: `confidence` for the predicted label, the rest shared by the others."""
    one_hot = np.eye(classes)[predicted]
    return (one_hot * confidence + (1 - one_hot) * (1 - confidence) / (classes - 1))[np.newaxis].astype(np.float32)


def _one_hot(labels: np.ndarray, classes: int = 3) -> np.ndarray:
    return _soft(labels, 1.0, classes)


def test_generalized_dice_loss_weighs_labels_by_their_squared_voxel_count():
    # The small organ is predicted as background (one-hot). With w_l = 1 / count_l^2 (Sudre et al., the original):
    #   background: sum(l p) = 28645, sum(l + p^2) = 28645 + 28672; organ 1: 4096, 8192; organ 2: 0, 27
    #   loss = 1 - 2 (1/28645 + 1/4096) / (57317/28645^2 + 8192/4096^2 + 27/27^2) = 0.98516
    # A weight of 1 / count (the sum of squared labels) would give 1 - 2 * 2 / (57317/28645 + 2 + 1) = 0.2002.
    labels = _two_organs_in_a_cube()
    missed_small = np.where(labels == 2, 0, labels)
    loss = float(generalized_dice_loss(_one_hot(labels), _one_hot(missed_small)))
    assert loss == pytest.approx(0.98516, abs=2e-5)
    # The same with soft predictions (0.9 for the predicted label, 0.05 for the others):
    #   background: sum(l p) = 0.9 * 28645 = 25780.5, sum(p^2) = 0.81 * 28672 + 0.0025 * 4096 = 23234.56
    #   organ 1: 0.9 * 4096 = 3686.4, 0.81 * 4096 + 0.0025 * 28672 = 3389.44
    #   organ 2: 0.05 * 27 = 1.35, 0.0025 * 32768 = 81.92
    #   loss = 1 - 2 (25780.5/28645^2 + 3686.4/4096^2 + 1.35/27^2)
    #            / ((28645 + 23234.56)/28645^2 + (4096 + 3389.44)/4096^2 + (27 + 81.92)/27^2) = 0.97194
    # (with 1 / count weights: 1 - 2 * 1.85 / (51879.56/28645 + 7485.44/4096 + 108.92/27) = 0.5178)
    loss = float(generalized_dice_loss(_one_hot(labels), _soft(missed_small, 0.9)))
    assert loss == pytest.approx(0.97194, abs=2e-5)
    # Missing the large organ instead costs less, as the small one outweighs it (0.9 / 0.05 again):
    #   background: 25780.5, 0.81 * (28645 + 4096) + 0.0025 * 27 = 26520.2775
    #   organ 1: 0.05 * 4096 = 204.8, 0.0025 * 32768 = 81.92; organ 2: 0.9 * 27 = 24.3, 0.81 * 27 + 0.0025 * 32741
    #   = 103.7225; loss = 1 - 2 (25780.5/28645^2 + 204.8/4096^2 + 24.3/27^2)
    #            / ((28645 + 26520.2775)/28645^2 + (4096 + 81.92)/4096^2 + (27 + 103.7225)/27^2) = 0.62839
    missed_large = np.where(labels == 1, 0, labels)
    loss = float(generalized_dice_loss(_one_hot(labels), _soft(missed_large, 0.9)))
    assert loss == pytest.approx(0.62839, abs=2e-5)


def test_generalized_dice_loss_is_zero_for_a_perfect_prediction_and_one_for_a_complete_miss():
    labels = _one_hot(_two_organs_in_a_cube())
    assert float(generalized_dice_loss(labels, labels)) == pytest.approx(0.0, abs=1e-6)
    assert float(generalized_dice_loss(labels, 1.0 - labels)) == pytest.approx(1.0, abs=1e-6)


def test_generalized_dice_loss_adds_its_epsilon_to_numerator_and_denominator():
    # no label anywhere and nothing predicted: 1 - 2 * (0 + 1e-8) / (0 + 1e-8) = -1, finite
    empty = np.zeros((1, 2, 2, 2, 3), dtype=np.float32)
    assert float(generalized_dice_loss(empty, empty)) == pytest.approx(-1.0, abs=1e-6)


def test_generalized_dice_loss_averages_over_the_batch_and_takes_logits():
    labels = _one_hot(_two_organs_in_a_cube())
    batch = np.concatenate([labels, labels])
    logits = np.concatenate([labels, 1.0 - labels]) * 40.0  # softmax: item 0 perfect (loss 0), item 1 all wrong (1)
    assert float(generalized_dice_loss_from_logits(batch, logits)) == pytest.approx(0.5, abs=1e-5)


def test_clipping_scales_large_gradients_to_the_threshold_and_tracks_the_norm():
    clipping = AdaptiveGradientClipping(factor=5.0, initial_average=10.0, rate=0.01)
    factor, threshold = clipping(tf.constant(500.0))  # threshold 5 x 10
    assert float(threshold) == pytest.approx(50.0)
    assert float(factor) * 500.0 == pytest.approx(50.0)
    assert float(clipping.average) == pytest.approx(10.0 + 0.01 * (50.0 - 10.0))  # toward min(norm, threshold)
    factor, _ = clipping(tf.constant(5.0))
    assert float(factor) == 1.0
    assert float(clipping.average) == pytest.approx(10.4 + 0.01 * (5.0 - 10.4))


def test_clipping_ignores_non_finite_norms():
    clipping = AdaptiveGradientClipping()
    for norm in (np.inf, np.nan):
        clipping(tf.constant(norm, tf.float32))
        assert float(clipping.average) == 10.0


def test_weight_average_follows_the_decay_and_swaps_back_the_trained_weights():
    weight = tf.Variable([0.0, 10.0])
    average = WeightAverage([weight], decay=0.9)
    weight.assign([10.0, 10.0])
    average.update()
    np.testing.assert_allclose(average.averages[0].numpy(), [1.0, 10.0], rtol=1e-6)
    with average.swapped():
        np.testing.assert_allclose(weight.numpy(), [1.0, 10.0], rtol=1e-6)
    np.testing.assert_allclose(weight.numpy(), [10.0, 10.0])


def test_run_configuration_survives_a_json_round_trip_with_nested_dataclasses_and_tuples():
    config = LocalizationRunConfig(
        data=LocalizationDataConfig(
            spacing_mm=12.0, valid_sizes_zyx=(PAPER_LOCALIZATION.valid_sizes_zyx[0], (16, 32), (16, 32))
        )
    )
    import json

    record = json.loads(json.dumps(to_record(config)))
    assert from_record(LocalizationRunConfig, record) == config
    with pytest.raises(ValueError, match="unknown"):
        from_record(LocalizationDataConfig, {"spacing": 6.0})


def test_records_written_before_the_settings_were_renamed_still_load() -> None:
    """Run folders and exports of earlier versions: `dropout` is now `dropout_rate` (as the SCN's), the per-axis
    valid sizes one `valid_sizes_zyx` (as the input contract's); an old name in a --config change still applies."""
    shipped = json.loads((SHIPPED_MODELS / "localization" / METADATA_FILE).read_text())["network"]
    assert "dropout" in shipped  # exported before the rename
    assert from_record(LocalizationNetConfig, shipped) == LocalizationNetConfig(dropout_rate=shipped["dropout"])
    old = {"spacing_mm": 6.0, "valid_sizes_xy": [48, 96], "valid_sizes_z": [32]}
    assert from_record(LocalizationDataConfig, old).valid_sizes_zyx == ((32,), (48, 96), (48, 96))
    old = {"valid_sizes_x": [64], "valid_sizes_y": [96], "valid_sizes_z": [32, 64]}
    assert from_record(SegmentationDataConfig, old).valid_sizes_zyx == ((32, 64), (96,), (64,))
    changed = with_changes(SegmentationDataConfig(), {"valid_sizes_x": [96]})  # the others as they were
    assert changed.valid_sizes_zyx == (*SegmentationDataConfig().valid_sizes_zyx[:2], (96,))


def test_run_folders_are_new_per_run_and_checkpoints_are_found_by_iteration(tmp_path):
    first, second = new_run_folder(tmp_path, "localization", 2), new_run_folder(tmp_path, "localization", 2)
    assert first != second and first.parent == tmp_path / "localization" / "cv2"
    (first / "weights").mkdir()
    for iteration in (10, 2):
        (first / "weights" / f"ckpt-{iteration}.index").write_bytes(b"")
    assert checkpoint_iterations(first) == [2, 10]


def test_csv_log_drops_rows_past_the_resumed_iteration(tmp_path):
    log = CsvLog(tmp_path / "train.csv", ["loss"])
    for iteration in (5, 10, 15):
        log.append(iteration, {"loss": iteration / 10})
    CsvLog(tmp_path / "train.csv", ["loss"], resume_from=10).append(11, {"loss": float("nan")})
    lines = (tmp_path / "train.csv").read_text().splitlines()
    assert lines == ["iteration,loss", "5,0.5", "10,1", "11,nan"]


def test_sigmoid_cross_entropy_is_the_mean_binary_cross_entropy():
    labels = np.array([[[[[1.0, 0.0]]]]], dtype=np.float32)
    logits = np.array([[[[[2.0, -1.0]]]]], dtype=np.float32)
    probabilities = 1 / (1 + np.exp(-logits))
    expected = -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    assert float(sigmoid_cross_entropy(labels, logits)) == pytest.approx(expected, rel=1e-6)


def test_a_config_file_changes_only_the_settings_it_names(tmp_path: Path) -> None:
    path = tmp_path / "scn.json"
    path.write_text('{"training": {"ema_decay": 0.98}, "data": {"spatial": {"rotation_rad": 0.1}}}')
    config = config_from_file(SEGMENTATION, path)
    default = SegmentationRunConfig()
    assert config.training.ema_decay == 0.98 and config.data.spatial.rotation_rad == 0.1
    assert config.training.learning_rate == default.training.learning_rate  # the SCN's own default is kept
    assert config.data.spatial.translation_mm == default.data.spatial.translation_mm
    assert config.network == default.network
    path.write_text('{"training": {"ema_decay": 0.98, "no_such_setting": 1}}')
    with pytest.raises(InputError, match="no_such_setting"):
        config_from_file(SEGMENTATION, path)


def test_loss_scale_doubles_after_the_growth_period_and_halves_down_to_one_on_non_finite_steps():
    scale = DynamicLossScale(initial_scale=4.0, growth_steps=3)
    observed = []
    for finite in (True, True, True, True, False, True, False, False, False, False):
        scale.update(tf.constant(finite))
        observed.append((float(scale.scale), int(scale.finite_steps)))
    assert observed == [
        (4.0, 1), (4.0, 2), (8.0, 0),  # doubled on the 3rd finite step in a row
        (8.0, 1), (4.0, 0),  # a non-finite step halves and restarts the count
        (4.0, 1), (2.0, 0), (1.0, 0),
        (1.0, 0), (1.0, 0),  # never below 1, as TensorFlow 2.6's LossScaleOptimizer
    ]  # fmt: skip
    largest = DynamicLossScale(initial_scale=2.0**127, growth_steps=1)  # doubled, it would overflow float32
    largest.update(tf.constant(True))
    assert (float(largest.scale), int(largest.finite_steps)) == (2.0**127, 0)  # kept, and the count restarts


class _TinyTask:
    """A 1x1x1 convolution whose float16 gradient overflows when the loss scale is large: loss = sum(10 * w)."""

    stage = "tiny"
    loss_fields = ("loss",)
    test_fields = ()

    def build_model(self):
        return keras.Sequential(
            [keras.Input((None, None, None, 1)), keras.layers.Conv3D(1, 1, use_bias=False, kernel_initializer="ones")]
        )

    def loss_terms(self, model, sample):
        return {"loss": tf.reduce_sum(tf.cast(model(sample["image"], training=True), tf.float32))}


def test_a_float16_step_whose_gradients_overflow_is_skipped_but_still_averaged(tmp_path):
    config = TrainingConfig(precision="float16", loss_scale_initial=2.0**15, ema_decay=0.5, learning_rate=0.1)
    trainer = Trainer(_TinyTask(), config, tmp_path, record={}, progress=False)
    trainer.average.averages[0].assign(tf.zeros_like(trainer.average.averages[0]))
    image = tf.fill((1, 2, 2, 2, 1), 10.0)
    # d loss / d w = 8 voxels x 10 = 80, times 2^15 is far beyond float16's 65504: the step is skipped
    values = trainer.step([{"image": image}])
    assert values["loss"] == pytest.approx(80.0)
    assert float(trainer.model.weights[0].numpy().squeeze()) == 1.0  # weights untouched
    assert float(trainer.loss_scale.scale) == 2.0**14
    # the weight average still moves, as the original's EMA does on every step: 0.5 * 0 + 0.5 * 1
    assert float(trainer.average.averages[0].numpy().squeeze()) == pytest.approx(0.5)
    for _ in range(5):  # 2^14 .. 2^10: still too large (80 x 1024 > 65504)
        trainer.step([{"image": image}])
    assert float(trainer.loss_scale.scale) == 2.0**9
    assert float(trainer.model.weights[0].numpy().squeeze()) == 1.0
    trainer.step([{"image": image}])  # 80 x 512 fits: applied
    assert float(trainer.model.weights[0].numpy().squeeze()) < 1.0
    assert int(trainer.loss_scale.finite_steps) == 1
    # Adam counted the six skipped steps too, as TF 2.6's LossScaleOptimizer: its bias correction uses t = 7, so the
    # first applied step moves the weight by lr * sqrt(1 - 0.999^7) / (1 - 0.9^7) * m / sqrt(v), with m = 0.1 g and
    # v = 0.001 g^2 after one gradient: 0.0506 (at t = 1 it would be 0.1)
    assert int(trainer.optimizer.iterations) == 7
    expected = 0.1 * math.sqrt(1 - 0.999**7) / (1 - 0.9**7) * 0.1 / math.sqrt(0.001)
    assert 1.0 - float(trainer.model.weights[0].numpy().squeeze()) == pytest.approx(expected, rel=1e-3)
    assert keras.config.dtype_policy().name == "float32"  # the network was built in float16, the policy restored


class _RandomTask(_TinyTask):
    """As `_TinyTask`, with a randomly initialised kernel (the seed decides it)."""

    def build_model(self):
        return keras.Sequential([keras.Input((None, None, None, 1)), keras.layers.Conv3D(4, 3, use_bias=False)])


def test_every_run_is_seeded_with_0_by_default_so_every_fold_starts_from_the_same_weights(tmp_path):
    """The original seeds nothing; runs here are reproducible by default (docs/fidelity.md #50): the four folds of
    one configuration start from equal initial weights, and another seed gives other ones."""
    assert TrainingConfig().seed == 0
    first, second = (Trainer(_RandomTask(), TrainingConfig(), tmp_path / k, record={}, progress=False) for k in "ab")
    np.testing.assert_array_equal(first.model.weights[0].numpy(), second.model.weights[0].numpy())
    other = Trainer(_RandomTask(), TrainingConfig(seed=1), tmp_path / "c", record={}, progress=False)
    assert not np.array_equal(first.model.weights[0].numpy(), other.model.weights[0].numpy())
