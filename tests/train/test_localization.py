"""Training the localization network on synthetic phantoms: it learns, resumes after a kill, exports faithfully.

The phantoms are sampled at 12 mm (a 32^3 network input) for the in-process runs so that a run of a few dozen
iterations takes seconds on a CPU; the command-line runs use the real 6 mm on a phantom cropped to 180 mm.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from efficientscn.data.layout import FlareDataset, write_phantom_dataset
from efficientscn.data.localization import LocalizationDataConfig, LocalizationSamples
from efficientscn.data.preprocess import PreprocessConfig, preprocess_dataset
from efficientscn.data.setup_files import read_landmark_bb
from efficientscn.nn.config import LocalizationNetConfig
from efficientscn.nn.localization import build_localization_net
from efficientscn.phantom import PhantomGrid
from efficientscn.settings import from_record
from efficientscn.train.checkpoints import load_averaged_model
from efficientscn.train.config import LocalizationRunConfig, TrainingConfig
from efficientscn.train.localization import LocalizationTask, network_box_mm
from efficientscn.train.loop import Trainer, TrainingDiverged
from efficientscn.train.run_folder import checkpoint_iterations, read_config
from efficientscn.train.runs import train_stage
from efficientscn.train.stages import LOCALIZATION

from helpers import REPO_ROOT

FAST = LocalizationRunConfig(
    data=LocalizationDataConfig(spacing_mm=12.0),
    training=TrainingConfig(
        learning_rate=5e-4, max_iter=40, test_iter=10, snapshot_iter=20, log_iter=10, ema_decay=0.9, workers=0
    ),
)


def _phantom_dataset(root: Path, grid: PhantomGrid) -> Path:
    write_phantom_dataset(root, 6, grid, seed=1)
    report = preprocess_dataset(root, PreprocessConfig(folds=3), progress=False)
    assert report.ok
    return root


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Six whole-abdomen phantoms (360 x 288 x 240 mm) in FLARE layout, preprocessed with 3 folds."""
    return _phantom_dataset(tmp_path_factory.mktemp("phantoms"), PhantomGrid((80, 64, 40), (4.5, 4.5, 6.0)))


@pytest.fixture(scope="module")
def trained_run(phantoms, tmp_path_factory) -> Path:
    return train_stage(LOCALIZATION, phantoms, tmp_path_factory.mktemp("runs"), 1, FAST, progress=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_short_training_on_phantoms_lowers_the_loss_and_raises_the_test_dice(trained_run, phantoms):
    losses = [float(row["loss"]) for row in _rows(trained_run / "train.csv")]
    dice = [float(row["dice_organ"]) for row in _rows(trained_run / "test.csv")]
    assert len(losses) == 4 and len(dice) == 4
    assert losses[-1] < 0.8 * losses[0]
    assert dice[-1] > dice[0] and dice[-1] > 0.6
    test_ids = (phantoms / "setup" / "cv" / "1" / "test.txt").read_text().split()
    final = trained_run / "test" / "iter_40"
    assert sorted(p.name for p in final.glob("*.nii.gz")) == sorted(f"{case}.nii.gz" for case in test_ids)
    boxes = _rows(final / "boxes.csv")
    assert [row["id"] for row in boxes] == test_ids
    assert all(
        np.isfinite([float(row[k]) for k in ("xmin", "ymin", "zmin", "xmax", "ymax", "zmax")]).all() for row in boxes
    )
    assert checkpoint_iterations(trained_run) == [20, 40]
    config = read_config(trained_run)
    assert config["data"]["spacing_mm"] == 12.0 and config["training"]["max_iter"] == 40
    assert config["training"]["precision"] == "float32"  # "auto", resolved on this CPU, so a resume keeps it
    assert any((trained_run / "tensorboard").iterdir())


def test_network_space_box_maps_to_the_physical_organ_box(phantoms):
    """The box written during tests: the label's own network-space box lands on landmark_bb.csv within a voxel."""
    truth = read_landmark_bb(phantoms / "setup" / "landmark_bb.csv")
    samples = LocalizationSamples(phantoms, FAST.data)
    for case in ("train_000", "train_003"):
        _, transform, sample = samples.test_sample(case)
        box = network_box_mm(sample["label"][..., 1] > 0, (12.0, 12.0, 12.0), transform)
        low, high = truth[case]
        assert np.abs(np.array(box[:3]) - low).max() <= 12.0
        assert np.abs(np.array(box[3:]) - high).max() <= 12.0


@pytest.mark.slow  # half a minute: a localization run and its resumption
def test_resume_restores_iteration_weights_average_optimizer_clipping_and_loss_scale(phantoms, tmp_path):
    config = replace(FAST, training=replace(FAST.training, max_iter=3, snapshot_iter=3, precision="float16", workers=0))
    task = LocalizationTask(FlareDataset(phantoms), 0, config.data, config.network)
    first = Trainer(task, config.training, tmp_path, record={}, progress=False)
    first.run()
    saved = {name: [np.array(v.numpy()) for v in variables] for name, variables in _state(first).items()}
    assert first.optimizer.iterations.numpy() == 3 and first.loss_scale.finite_steps.numpy() == 3

    second = Trainer(task, replace(config.training, max_iter=5), tmp_path, record={}, resume=True, progress=False)
    assert int(second.iteration.numpy()) == 3
    for name, variables in _state(second).items():
        for before, after in zip(saved[name], variables, strict=True):
            np.testing.assert_array_equal(before, after.numpy(), err_msg=name)
    second.run()
    assert checkpoint_iterations(tmp_path) == [3, 5]
    assert [int(row["iteration"]) for row in _rows(tmp_path / "train.csv")] == [3, 5]


def _state(trainer: Trainer) -> dict[str, list]:
    return {
        "weights": trainer.model.weights,
        "average": trainer.average.averages,
        "optimizer": trainer.optimizer.variables,
        "clipping": [trainer.clipping.average],
        "loss_scale": [trainer.loss_scale.scale, trainer.loss_scale.finite_steps],
        "iteration": [trainer.iteration],
    }


def test_a_nan_loss_stops_the_run_without_writing_a_checkpoint(phantoms, tmp_path):
    class Diverging(LocalizationTask):
        def loss_terms(self, model, sample):
            return {"loss": super().loss_terms(model, sample)["loss"] * float("nan")}

    config = replace(FAST.training, max_iter=4, snapshot_iter=1, workers=0)
    task = Diverging(FlareDataset(phantoms), 0, FAST.data, FAST.network)
    with pytest.raises(TrainingDiverged, match="iteration 1"):
        Trainer(task, config, tmp_path, record={}, progress=False).run()
    assert checkpoint_iterations(tmp_path) == []


def test_exported_savedmodel_reloads_and_gives_the_in_memory_mask(trained_run, phantoms, tmp_path):
    output = tmp_path / "saved_models" / "localization"
    script = REPO_ROOT / "localization" / "main_create_model.py"
    result = subprocess.run(
        [sys.executable, str(script), "--run", str(trained_run), "--iter", "40", "--output", str(output), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = tf.saved_model.load(str(output))
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["image"]
    _, _, sample = LocalizationSamples(phantoms, FAST.data).test_sample("train_001")
    image = np.transpose(sample["image"], (3, 0, 1, 2))[np.newaxis].astype(np.float16)  # channels-first, float16
    exported = serve(image=tf.constant(image))["output_0"].numpy()
    assert exported.dtype == bool and exported.shape == (1, 1, 32, 32, 32)

    network = from_record(LocalizationNetConfig, read_config(trained_run)["network"])
    model = load_averaged_model(trained_run, 40, lambda: build_localization_net(network))
    checkpoint = tf.train.load_checkpoint(str(trained_run / "weights" / "ckpt-40"))
    for index, weight in enumerate(model.trainable_weights):  # the exported weights are the training's averages
        average = checkpoint.get_tensor(f"weight_average/averages/{index}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_array_equal(weight.numpy(), average)
    logits = model(np.transpose(image.astype(np.float32), (0, 2, 3, 4, 1)), training=False).numpy()
    in_memory = (logits[..., 1] > logits[..., 0])[:, np.newaxis]
    assert np.array_equal(exported, in_memory)
    assert 0 < exported.mean() < 1  # a real mask, not a constant

    again = subprocess.run(
        [sys.executable, str(script), "--run", str(trained_run), "--iter", "40", "--output", str(output), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.fixture(scope="module")
def small_phantoms(tmp_path_factory) -> Path:
    """Six phantoms cropped to 180 mm: the real 6 mm network input is then 32^3."""
    return _phantom_dataset(tmp_path_factory.mktemp("small"), PhantomGrid((40, 40, 36), (4.5, 4.5, 5.0)))


def _train_command(dataset: Path, output: Path, *flags: str) -> list[str]:
    script = REPO_ROOT / "localization" / "main.py"
    return [sys.executable, str(script), "--dataset", str(dataset), "--output", str(output), "--cv", "1", *flags]


@pytest.mark.slow  # a training process started, killed and resumed: tens of seconds
def test_a_killed_training_run_resumes_from_its_last_checkpoint_and_continues(small_phantoms, tmp_path):
    flags = ["--snapshot-iter", "3", "--test-iter", "1000", "--log-iter", "1", "--workers", "1", "-q"]
    process = subprocess.Popen(
        _train_command(small_phantoms, tmp_path, "--max-iter", "1000", *flags),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    run_folders = tmp_path / "localization" / "cv1"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            runs = list(run_folders.glob("*")) if run_folders.exists() else []
            if runs and checkpoint_iterations(runs[0]) and checkpoint_iterations(runs[0])[-1] >= 6:
                break
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (run,) = run_folders.glob("*")
    killed_at = checkpoint_iterations(run)[-1]
    assert killed_at >= 6, process.stderr.read().decode()

    resumed = subprocess.run(
        _train_command(small_phantoms, tmp_path, "--resume", "--max-iter", str(killed_at + 3), *flags),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert list(run_folders.glob("*")) == [run]  # the same run folder, not a new one
    assert checkpoint_iterations(run)[-1] == killed_at + 3
    assert f"from iteration {killed_at} to {killed_at + 3}" in (run / "output.log").read_text()
    iterations = [int(row["iteration"]) for row in _rows(run / "train.csv")]
    assert iterations == list(range(1, killed_at + 4))  # rows after the checkpoint were dropped, then continued
    reader = tf.train.load_checkpoint(str(run / "weights" / f"ckpt-{killed_at + 3}"))
    assert reader.get_tensor("iteration/.ATTRIBUTES/VARIABLE_VALUE") == killed_at + 3
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == killed_at + 3
    assert json.loads((run / "config.json").read_text())["training"]["max_iter"] == killed_at + 3


def test_resume_refuses_settings_that_would_change_the_run(small_phantoms, tmp_path):
    result = subprocess.run(
        _train_command(small_phantoms, tmp_path, "--resume", "--learning-rate", "0.1", "-q"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "--resume continues a run" in result.stderr


def test_a_split_naming_a_missing_case_is_refused_before_training(small_phantoms, tmp_path):
    broken = tmp_path / "dataset"
    broken.mkdir()
    for name in ("TrainingImg", "TrainingImg_small", "TrainingMask_small"):
        os.symlink(small_phantoms / name, broken / name)
    shutil.copytree(small_phantoms / "setup", broken / "setup")
    with (broken / "setup" / "cv" / "1" / "train.txt").open("a") as split:
        split.write("train_999\n")
    result = subprocess.run(
        _train_command(broken, tmp_path / "out", "--max-iter", "1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "train_999" in result.stderr and not (tmp_path / "out" / "localization").exists()


TWO_CPU_REPLICAS = """
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from efficientscn.data.layout import FlareDataset
from efficientscn.data.localization import LocalizationDataConfig, LocalizationSamples
from efficientscn.nn.config import LocalizationNetConfig
from efficientscn.train.config import LocalizationRunConfig
from efficientscn.train.localization import LocalizationTask
from efficientscn.train.stages import LOCALIZATION
from efficientscn.train.config import TrainingConfig
from efficientscn.train.loop import Trainer
from efficientscn.train.runs import train_stage

dataset, output = Path(sys.argv[1]), Path(sys.argv[2])
devices = ["/cpu:0", "/cpu:1"]
data = LocalizationDataConfig(spacing_mm=12.0)

# the same sample on both replicas must give exactly the update one device makes from it (no dropout noise)
task = LocalizationTask(FlareDataset(dataset), 1, data, LocalizationNetConfig(dropout_rate=0.0))
training = TrainingConfig(learning_rate=1e-3, workers=0)
sample = LocalizationSamples(dataset, data).sample("train_000", np.random.default_rng(0))
batch = {key: tf.constant(value[np.newaxis]) for key, value in sample.items()}
trainers = []
for name, chosen in (("single", None), ("mirrored", devices)):
    (output / name).mkdir()
    trainers.append(Trainer(task, training, output / name, record={}, progress=False, devices=chosen))
single, mirrored = trainers
for _ in range(3):
    single.step([batch])
    mirrored.step([batch, batch])
for one, two in zip(single.model.trainable_weights + single.average.averages,
                    mirrored.model.trainable_weights + mirrored.average.averages):
    np.testing.assert_allclose(one.numpy(), two.numpy(), rtol=1e-4, atol=1e-6)
for weight in mirrored.model.trainable_weights:
    first, second = (copy.numpy() for copy in weight.value.values)
    assert np.array_equal(first, second), weight.name
print("replicas agree")

training = TrainingConfig(learning_rate=1e-3, max_iter=2, snapshot_iter=2, test_iter=2, log_iter=1, workers=0)
config = LocalizationRunConfig(data=data, training=training)
print(train_stage(LOCALIZATION, dataset, output / "runs", 1, config, progress=False, devices=devices))
"""


@pytest.mark.slow  # a separate TensorFlow process with two logical CPUs: tens of seconds
def test_mirrored_strategy_trains_one_sample_per_replica_on_two_logical_cpus(phantoms, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", TWO_CPU_REPLICAS, str(phantoms), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas agree" in result.stdout
    run = Path(result.stdout.strip().splitlines()[-1])
    assert read_config(run)["replicas"] == 2
    assert checkpoint_iterations(run) == [2]
    assert all(np.isfinite(float(row["loss"])) for row in _rows(run / "train.csv"))
    assert len(_rows(run / "test.csv")) == 1
    network = from_record(LocalizationNetConfig, read_config(run)["network"])
    model = load_averaged_model(run, 2, lambda: build_localization_net(network))  # a mirrored run loads anywhere
    assert model.count_params() == 637_474
