"""Training on several workers (MultiWorkerMirroredStrategy): two worker processes on this machine, as two machines
of a cluster would run it, keep equal weights, match one process with the same global batch, and resume together."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from efficientscn.data.layout import write_phantom_dataset
from efficientscn.data.preprocess import PreprocessConfig, preprocess_dataset
from efficientscn.phantom import PhantomGrid
from efficientscn.train.distribution import TF_CONFIG, tf_config_workers
from efficientscn.train.run_folder import checkpoint_iterations, read_config

from helpers import REPO_ROOT

STEPS = 3


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six phantoms cropped to 180 mm in FLARE layout, preprocessed with 3 folds."""
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, 6, PhantomGrid((40, 40, 36), (4.5, 4.5, 5.0)), seed=1)
    assert preprocess_dataset(root, PreprocessConfig(folds=3), progress=False).ok
    return root


def _ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _tf_configs(count: int) -> list[str]:
    workers = [f"127.0.0.1:{port}" for port in _ports(count)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(count)]


def _environment(tf_config: str | None) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key != TF_CONFIG}
    if tf_config is not None:
        environment[TF_CONFIG] = tf_config
    return environment


def test_tf_config_counts_the_chief_and_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TF_CONFIG, raising=False)
    assert tf_config_workers() == 0
    monkeypatch.setenv(TF_CONFIG, json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}}))
    assert tf_config_workers() == 3
    monkeypatch.setenv(TF_CONFIG, "{not json")
    with pytest.raises(Exception, match=r"TF_CONFIG: not a tf\.distribute cluster description"):
        tf_config_workers()


STEPS_SCRIPT = """
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

mode, dataset, output = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "one":  # one process, two replicas: the same global batch of two samples
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from efficientscn.data.layout import FlareDataset
from efficientscn.data.localization import LocalizationDataConfig, LocalizationSamples
from efficientscn.nn.config import LocalizationNetConfig
from efficientscn.train.config import TrainingConfig
from efficientscn.train.distribution import training_strategy, worker_role
from efficientscn.train.localization import LocalizationTask
from efficientscn.train.loop import Trainer

strategy = training_strategy(["/cpu:0", "/cpu:1"] if mode == "one" else None, multi_worker=mode == "worker")
role = worker_role(strategy)
data = LocalizationDataConfig(spacing_mm=12.0)
task = LocalizationTask(FlareDataset(dataset), 1, data, LocalizationNetConfig(dropout_rate=0.0))
source = LocalizationSamples(dataset, data)
def sample(k):  # replica k's sample at every step: another case, another augmentation
    drawn = source.sample(f"train_00{k}", np.random.default_rng(k))
    return {key: tf.constant(value[np.newaxis]) for key, value in drawn.items()}
run = output / mode
run.mkdir(exist_ok=True)
trainer = Trainer(task, TrainingConfig(learning_rate=1e-3, workers=0), run, record={}, progress=False,
                  strategy=strategy)
batch = [sample(0), sample(1)] if mode == "one" else [sample(role.index)]
for step in range(1, STEPS + 1):
    trainer.step(batch)
    weights = [w.numpy() for w in trainer.model.trainable_weights + trainer.average.averages]
    np.savez(output / f"{mode}{role.index}_step{step}.npz", *weights)
print("replicas", trainer.replicas, "workers", role.count, "chief", role.chief)
""".replace("STEPS", str(STEPS))


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{k}"] for k in range(len(saved.files))]


@pytest.mark.slow  # three TensorFlow processes: about a minute
def test_two_workers_keep_equal_weights_equal_to_one_process_with_the_same_global_batch(
    phantoms: Path, tmp_path: Path
) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", STEPS_SCRIPT, "worker", str(phantoms), str(tmp_path)],
            env=_environment(tf_config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tf_config in _tf_configs(2)
    ]
    one = subprocess.run(
        [sys.executable, "-c", STEPS_SCRIPT, "one", str(phantoms), str(tmp_path)],
        env=_environment(None),
        capture_output=True,
        text=True,
        timeout=600,
    )
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, errors) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, errors[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    assert [out.split() for out, _ in outputs] == [
        ["replicas", "2", "workers", "2", "chief", "True"],
        ["replicas", "2", "workers", "2", "chief", "False"],
    ]
    for step in range(1, STEPS + 1):
        first, second = _weights(tmp_path / f"worker0_step{step}.npz"), _weights(tmp_path / f"worker1_step{step}.npz")
        single = _weights(tmp_path / f"one0_step{step}.npz")
        for a, b, c in zip(first, second, single, strict=True):
            assert np.array_equal(a, b), step  # the workers' copies agree bit for bit after every step
            np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)  # and follow the one-process run
    moved = [not np.allclose(a, b) for a, b in zip(_weights(tmp_path / "worker0_step1.npz"), first, strict=True)]
    assert any(moved)  # the steps did train
    chief_files = ["config.json", "tensorboard", "test.csv", "train.csv"]  # the other worker wrote nothing here
    assert sorted(path.name for path in (tmp_path / "worker").iterdir()) == chief_files


def _train(dataset: Path, output: Path, tf_config: str, *flags: str) -> subprocess.Popen:
    command = [sys.executable, str(REPO_ROOT / "localization" / "main.py"), "--dataset", str(dataset), "--output",
               str(output), "--cv", "1", "--multi-worker", "--snapshot-iter", "2", "--test-iter", "1000",
               "--log-iter", "1", "--workers", "0", "-q", *flags]  # fmt: skip
    return subprocess.Popen(
        command, env=_environment(tf_config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow  # two training processes started, killed and restarted: one to two minutes
def test_two_workers_killed_together_resume_from_the_chiefs_last_checkpoint(phantoms: Path, tmp_path: Path) -> None:
    output = tmp_path / "runs"
    workers = [_train(phantoms, output, tf_config, "--max-iter", "1000") for tf_config in _tf_configs(2)]
    runs = output / "localization" / "cv1"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and all(worker.poll() is None for worker in workers):
            folders = list(runs.glob("*")) if runs.is_dir() else []
            if folders and (checkpoint_iterations(folders[0]) or [0])[-1] >= 4:
                break
            time.sleep(0.5)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    (run,) = runs.glob("*")  # one run folder: the chief's
    killed_at = checkpoint_iterations(run)[-1]
    assert killed_at >= 4, workers[0].stderr.read()[-3000:] if workers[0].stderr else ""

    restarted = [_train(phantoms, output, tf_config, "--resume", "--max-iter", str(killed_at + 2))
                 for tf_config in _tf_configs(2)]  # fmt: skip
    results = [worker.communicate(timeout=600) for worker in restarted]
    for worker, (_, errors) in zip(restarted, results, strict=True):
        assert worker.returncode == 0, errors[-3000:]
    assert list(runs.glob("*")) == [run]
    assert checkpoint_iterations(run)[-1] == killed_at + 2
    assert [int(row["iteration"]) for row in _rows(run / "train.csv")] == list(range(1, killed_at + 3))
    assert f"from iteration {killed_at} to {killed_at + 2}" in (run / "output.log").read_text()
    config = read_config(run)
    assert config["workers"] == 2 and config["replicas"] == 2
    assert sorted(path.name for path in run.iterdir()) == [
        "config.json", "output.log", "tensorboard", "test", "test.csv", "train.csv", "weights",
    ]  # fmt: skip
