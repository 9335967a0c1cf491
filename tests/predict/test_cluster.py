"""`predict --cluster`: a Dask cluster does the batch a process does, case for case, and survives what clusters do
(a worker killed mid-case, a worker that does not see the files, Ctrl-C)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.cli import main
from efficientscn.model.folder import SHIPPED_MODELS
from efficientscn.predict.options import check_cluster_address

from helpers import shared_case

CASES = (
    "ts_example_ct_sm",
    "ts_example_ct",
    "ts_example_ct_sm_lpi",
    "ts_example_ct_sm_asl",
    "ts_example_ct_sm_oblique",
)


def _link_cases(folder: Path, case_ids: tuple[str, ...] = CASES, copies: int = 1) -> list[str]:
    """Links `<id>[_<k>]_0000.nii.gz` to shared CTs; returns the label names they get."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for copy in range(copies):
        for case_id in case_ids:
            name = case_id if copies == 1 else f"{case_id}_{copy}"
            (folder / f"{name}_0000.nii.gz").symlink_to(shared_case(case_id).image)
            names.append(f"{name}.nii.gz")
    return names


def _command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "efficientscn.cli", "predict", "-q", *map(str, args)]


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for path in sorted(folder.glob("*.nii.gz"))}


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_cluster_addresses_are_local_n_or_a_scheduler() -> None:
    assert check_cluster_address("local:2") == "local:2"
    assert check_cluster_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    for wrong in ("local:0", "local:two", "10.0.0.5:8786", "local"):
        with pytest.raises(ValueError, match="expected"):
            check_cluster_address(wrong)


@pytest.mark.slow  # a batch in one process and on two worker processes: a few minutes
def test_a_local_cluster_of_two_workers_gives_the_labels_of_one_process(tmp_path: Path) -> None:
    _link_cases(tmp_path / "in")
    (tmp_path / "in" / "dicom_case").symlink_to(shared_case("ts_example_ct_dicom").image, target_is_directory=True)
    common = ("-i", tmp_path / "in", "--models", SHIPPED_MODELS, "--device", "cpu", "--statistics")
    assert main(["predict", "-q", *map(str, common), "-o", str(tmp_path / "one")]) == 0
    report = tmp_path / "cluster.json"
    cluster = ("-o", tmp_path / "two", "--cluster", "local:2", "--report", report)
    assert main(["predict", "-q", *map(str, (*common, *cluster))]) == 0

    one, two = _labels(tmp_path / "one"), _labels(tmp_path / "two")
    assert len(one) == len(CASES) + 1 and one.keys() == two.keys()
    for name, label in one.items():
        assert np.array_equal(label, two[name]), name  # bit for bit
    assert (tmp_path / "one" / "statistics.csv").read_text() == (tmp_path / "two" / "statistics.csv").read_text()
    facts = json.loads(report.read_text())
    workers = facts["cluster"]["workers"]
    assert len(workers) == 2 and {w["threads"] for w in workers.values()} == {1}
    assert all(w["start_seconds"] > 0 and w["device"] == "cpu" for w in workers.values())
    assert facts["device"] == "cpu" and facts["models"]["segmentation"]["source"] == "rebuilt"
    assert [case["status"] for case in facts["cases"]] == ["done"] * (len(CASES) + 1)
    assert {case["worker"] for case in facts["cases"]} <= set(workers)
    assert facts["cluster"]["lost_workers"] == [] and _leftovers(tmp_path / "two") == []


def _lock_holders(folder: Path) -> dict[int, str]:
    """The processes holding a case's lock in `folder` (from /proc/locks), with the lock's name."""
    inodes = {}
    for lock in folder.glob(".*.lock"):
        try:
            inodes[lock.stat().st_ino] = lock.name
        except FileNotFoundError:
            continue
    holders = {}
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK":
            pid, inode = int(fields[4]), int(fields[5].split(":")[-1])
            if inode in inodes:
                holders[pid] = inodes[inode]
    return holders


@pytest.mark.slow  # a batch on two worker processes, one of which is killed: a few minutes
def test_a_worker_killed_mid_case_leaves_every_case_done_once_and_the_report_names_it(tmp_path: Path) -> None:
    names = _link_cases(tmp_path / "in", ("ts_example_ct", "ts_example_ct_sm"), copies=3)
    out, report = tmp_path / "out", tmp_path / "run.json"
    command = _command("-i", tmp_path / "in", "-o", out, "--cluster", "local:2", "--report", report)
    batch = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed = None
    try:
        deadline = time.monotonic() + 600
        while killed is None and time.monotonic() < deadline and batch.poll() is None:
            holders = _lock_holders(out) if out.is_dir() else {}
            if holders:  # a worker is inside a case: its lock is held (and the case is not written yet)
                killed, lock = next(iter(holders.items()))
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        _, errors = batch.communicate(timeout=900)
    finally:
        if batch.poll() is None:
            os.killpg(batch.pid, signal.SIGKILL)
    assert killed is not None, errors
    assert batch.returncode == 0, errors

    facts = json.loads(report.read_text())
    records = {Path(case["output"]).name: case for case in facts["cases"]}
    assert sorted(records) == sorted(names)
    assert [case["status"] for case in records.values()] == ["done"] * len(names)  # each done once: none skipped
    killed_case = lock.removeprefix(".").removesuffix(".lock")
    lost = facts["cluster"]["lost_workers"]
    assert len(lost) == 1 and records[killed_case]["lost_workers"] == lost
    assert records[killed_case]["worker"] not in lost  # done by another worker, or by the nanny's new one
    assert [name for name, case in records.items() if case["lost_workers"]] == [killed_case]
    for name in names:  # whole labels on their CTs' grids
        label = sitk.ReadImage(str(out / name))
        assert label.GetPixelID() == sitk.sitkUInt8 and sitk.GetArrayViewFromImage(label).max() <= 4
    assert _leftovers(out) == []  # no .partial, no lock, no token


@pytest.mark.slow  # a batch on two worker processes, stopped: about a minute
def test_ctrl_c_cancels_the_cases_not_begun_writes_the_report_and_exits_130(tmp_path: Path) -> None:
    _link_cases(tmp_path / "in", ("ts_example_ct", "ts_example_ct_sm"), copies=4)
    out, report = tmp_path / "out", tmp_path / "run.json"
    batch = subprocess.Popen(
        _command("-i", tmp_path / "in", "-o", out, "--cluster", "local:2", "--report", report),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and batch.poll() is None and not (out.is_dir() and _lock_holders(out)):
        time.sleep(0.05)
    os.killpg(batch.pid, signal.SIGINT)  # as a terminal does: to the client and its local workers alike
    _, errors = batch.communicate(timeout=600)
    assert batch.returncode == 130, errors
    statuses = [case["status"] for case in json.loads(report.read_text())["cases"]]
    assert set(statuses) <= {"done", "not done"} and "not done" in statuses and "done" in statuses
    assert len(list(out.glob("*.nii.gz"))) == statuses.count("done")  # those under way were finished, whole
    assert _leftovers(out) == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def scheduler() -> Iterator[str]:
    """A Dask scheduler on this machine, as a cluster's would be."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"tcp://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def _worker_hiding(folder: Path, scheduler: str) -> subprocess.Popen:
    """A Dask worker to which `folder` looks empty: an empty file system mounted over it in a mount namespace of its
    own, as a worker on a machine without the cluster's shared file system would see it."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare")
    worker = f"{sys.executable} -m distributed.cli.dask_worker {scheduler} --nthreads 1 --no-dashboard --no-nanny"
    script = f"mount -t tmpfs none {folder} && exec {worker}"
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    if process.poll() is not None:
        pytest.skip(f"cannot mount in a namespace of its own here: {process.stderr.read()[-500:]}")
    return process


def _wait_for_workers(scheduler: str, count: int) -> None:
    from distributed import Client

    with Client(scheduler, timeout=60) as client:
        client.wait_for_workers(count, timeout=120)


@pytest.mark.slow  # a scheduler, a worker, a refused batch: tens of seconds
@pytest.mark.parametrize("hidden", ["output", "models"])
def test_a_worker_that_cannot_see_the_output_folder_or_the_models_stops_the_batch_before_any_case(
    hidden: str, scheduler: str, tmp_path: Path
) -> None:
    _link_cases(tmp_path / "in", ("ts_example_ct_sm",))
    out, report = tmp_path / "out", tmp_path / "reports" / "run.json"
    out.mkdir()
    models = tmp_path / "models"
    shutil.copytree(SHIPPED_MODELS, models, ignore=shutil.ignore_patterns("*.md"))
    worker = _worker_hiding(out if hidden == "output" else models, scheduler)
    try:
        _wait_for_workers(scheduler, 1)
        command = _command("-i", tmp_path / "in", "-o", out, "--models", models, "--cluster", scheduler)
        done = subprocess.run([*command, "--report", str(report)], capture_output=True, text=True, timeout=600)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert done.returncode == 2, done.stderr
    if hidden == "output":
        assert "the output folder must lie on a file system every worker sees, at the same path" in done.stderr
    else:
        assert str(models) in done.stderr and "tcp://" in done.stderr  # the worker's own error, and which worker
    assert "Traceback" not in done.stderr
    assert list(out.iterdir()) == []  # no label, and the token file is gone
    assert [case["status"] for case in json.loads(report.read_text())["cases"]] == ["not done"]
