"""The training loop's parts on their own: loss, gradient clipping, weight average, precision, run folders, config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from efficientscn.cli import config_from_file
from efficientscn.data.localization import LocalizationDataConfig
from efficientscn.errors import InputError
from efficientscn.settings import from_record, to_record
from efficientscn.train.clipping import AdaptiveGradientClipping
from efficientscn.train.ema import WeightAverage
from efficientscn.train.localization import LocalizationRunConfig
from efficientscn.train.losses import generalized_dice_loss, generalized_dice_loss_from_logits, sigmoid_cross_entropy
from efficientscn.train.precision import resolve_precision, uses_loss_scaling
from efficientscn.train.run_folder import CsvLog, checkpoint_iterations, new_run_folder
from efficientscn.train.scn import SCN, SCNRunConfig


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels][np.newaxis]


def _reference_dice_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The squared generalized Dice loss written out per label for one batch item."""
    numerator, denominator = 1e-8, 0.0
    for label in range(labels.shape[-1]):
        truth, predicted = labels[0, ..., label], probabilities[0, ..., label]
        weight = 1.0 / ((truth**2).sum() + 1e-4)
        numerator += weight * (truth * predicted).sum()
        denominator += weight * (truth + predicted**2).sum()
    return 1.0 - 2.0 * numerator / denominator


def test_generalized_dice_loss_matches_its_definition_and_is_zero_for_a_perfect_prediction():
    rng = np.random.default_rng(0)
    labels = _one_hot(rng.integers(0, 3, (4, 5, 6)), 3)
    probabilities = rng.dirichlet(np.ones(3), (4, 5, 6))[np.newaxis].astype(np.float32)
    loss = float(generalized_dice_loss(labels, probabilities))
    assert loss == pytest.approx(_reference_dice_loss(labels, probabilities), rel=1e-5)
    assert float(generalized_dice_loss(labels, labels)) == pytest.approx(0.0, abs=1e-5)
    assert float(generalized_dice_loss(labels, 1.0 - labels)) > 0.99


def test_generalized_dice_loss_weights_a_small_organ_as_much_as_the_background():
    labels = np.zeros((1, 10, 10, 10), dtype=np.int64)
    labels[0, :2, :2, :2] = 1  # 8 organ voxels among 1000
    one_hot = _one_hot(labels[0], 2)
    missed = np.zeros_like(one_hot)
    missed[..., 0] = 1.0  # everything background: the organ is missed entirely
    unweighted = 1.0 - 2.0 * 992 / (992 + 1000 + 8)  # plain Dice over all voxels hardly notices: about 0.008
    assert float(generalized_dice_loss(one_hot, missed)) > 0.3 > 10 * unweighted


def test_generalized_dice_loss_averages_over_the_batch_and_takes_logits():
    rng = np.random.default_rng(1)
    labels = np.concatenate([_one_hot(rng.integers(0, 2, (3, 4, 5)), 2) for _ in range(2)])
    logits = rng.normal(size=labels.shape).astype(np.float32)
    probabilities = tf.nn.softmax(logits).numpy()
    each = [_reference_dice_loss(labels[i : i + 1], probabilities[i : i + 1]) for i in range(2)]
    assert float(generalized_dice_loss_from_logits(labels, logits)) == pytest.approx(np.mean(each), rel=1e-5)


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


def test_precision_auto_is_float32_on_this_cpu_and_only_float16_scales_the_loss():
    assert resolve_precision("auto") == ("float16" if tf.config.list_physical_devices("GPU") else "float32")
    assert uses_loss_scaling("float16") and not uses_loss_scaling("bfloat16") and not uses_loss_scaling("float32")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8")


def test_run_configuration_survives_a_json_round_trip_with_nested_dataclasses_and_tuples():
    config = LocalizationRunConfig(data=LocalizationDataConfig(spacing_mm=12.0, valid_sizes_xy=(16, 32)))
    import json

    record = json.loads(json.dumps(to_record(config)))
    assert from_record(LocalizationRunConfig, record) == config
    with pytest.raises(ValueError, match="unknown"):
        from_record(LocalizationDataConfig, {"spacing": 6.0})


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
    config = config_from_file(SCN, path)
    default = SCNRunConfig()
    assert config.training.ema_decay == 0.98 and config.data.spatial.rotation_rad == 0.1
    assert config.training.learning_rate == default.training.learning_rate  # the SCN's own default is kept
    assert config.data.spatial.translation_mm == default.data.spatial.translation_mm
    assert config.network == default.network
    path.write_text('{"training": {"ema_decay": 0.98, "no_such_setting": 1}}')
    with pytest.raises(InputError, match="no_such_setting"):
        config_from_file(SCN, path)
