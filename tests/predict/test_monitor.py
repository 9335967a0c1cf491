"""What a `predict` run measures and reports: the JSON report, per-case and process peak memory, GPU peak memory."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from efficientscn.predict import monitor
from efficientscn.predict.monitor import CasePeakMemory, CaseRecord, GpuPeakMemory, peak_rss_mb, write_report

CLEAR_REFS = Path("/proc/self/clear_refs")
SLACK_MB = 2.0


def _records() -> list[CaseRecord]:
    done = CaseRecord(
        input="in/a_0000.nii.gz",
        output="out/a.nii.gz",
        status="done",
        seconds={"read": 0.5, "segment": 2.25},
        peak_rss_mb=812.3,
        peak_gpu_mb=None,
        details={"organ_voxels": [10, 20, 30, 40]},
        written=["out/a.nii.gz", "out/a.json"],
    )
    failed = CaseRecord(input="in/b.mha", output="out/b.nii.gz", status="failed", error="InputError: b.mha: broken")
    return [done, failed, CaseRecord(input="in/c", output="out/c.nii.gz")]


def test_the_report_holds_the_run_its_rounded_peak_memory_and_every_case(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    run = {"device": "cpu", "versions": {"python": "3.x"}, "models": ["localization", "segmentation"]}
    write_report(path, run, _records(), process_peak_mb=1234.5678)
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report == {
        "device": "cpu",
        "versions": {"python": "3.x"},
        "models": ["localization", "segmentation"],
        "peak_rss_mb": 1234.6,
        "cases": [
            {
                "input": "in/a_0000.nii.gz",
                "output": "out/a.nii.gz",
                "status": "done",
                "error": None,
                "seconds": {"read": 0.5, "segment": 2.25},
                "peak_rss_mb": 812.3,
                "peak_gpu_mb": None,
                "details": {"organ_voxels": [10, 20, 30, 40]},
                "warnings": [],
                "written": ["out/a.nii.gz", "out/a.json"],
                "worker": None,
                "lost_workers": [],
            },
            {
                "input": "in/b.mha",
                "output": "out/b.nii.gz",
                "status": "failed",
                "error": "InputError: b.mha: broken",
                "seconds": {},
                "peak_rss_mb": None,
                "peak_gpu_mb": None,
                "details": {},
                "warnings": [],
                "written": [],
                "worker": None,
                "lost_workers": [],
            },
            {
                "input": "in/c",
                "output": "out/c.nii.gz",
                "status": "pending",
                "error": None,
                "seconds": {},
                "peak_rss_mb": None,
                "peak_gpu_mb": None,
                "details": {},
                "warnings": [],
                "written": [],
                "worker": None,
                "lost_workers": [],
            },
        ],
    }
    assert path.read_text(encoding="utf-8").endswith("}\n")


@pytest.mark.parametrize(("peak", "rounded"), [(0.04, 0.0), (99.95001, 100.0), (512.0, 512.0)])
def test_the_reports_peak_memory_is_rounded_to_a_tenth_of_a_megabyte(
    tmp_path: Path, peak: float, rounded: float
) -> None:
    write_report(tmp_path / "report.json", {}, [], process_peak_mb=peak)
    assert json.loads((tmp_path / "report.json").read_text()) == {"peak_rss_mb": rounded, "cases": []}


def test_a_report_replaces_the_older_one_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text('{"cases": ["from an older run"], "stale": true}\n')
    write_report(path, {"device": "cpu"}, _records()[:1], process_peak_mb=10.0)
    report = json.loads(path.read_text())
    assert "stale" not in report
    assert [case["input"] for case in report["cases"]] == ["in/a_0000.nii.gz"]
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_the_process_peak_is_getrusages_kilobytes_in_megabytes_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(monitor.resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=300 * 1024))
    assert peak_rss_mb() == pytest.approx(300.0)


def test_the_process_peak_is_in_megabytes_on_macos_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(monitor.resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=300 * 2**20))
    assert peak_rss_mb() == pytest.approx(300.0)


def _resettable() -> bool:
    return CLEAR_REFS.exists() and os.access(CLEAR_REFS, os.W_OK)


@pytest.mark.skipif(not _resettable(), reason="per-case peaks need a writable /proc/self/clear_refs (Linux)")
def test_a_case_peak_starts_again_at_reset_and_the_process_peak_keeps_the_highest() -> None:
    memory = CasePeakMemory()
    memory.reset()
    before = memory.case_peak_mb()
    block = np.ones(25_000_000)  # 200 MB, every page touched
    peak = memory.case_peak_mb()
    assert peak >= before + 150
    assert memory.process_peak_mb() >= peak
    del block
    memory.reset()  # the next case: its peak starts from the memory in use now
    assert memory.case_peak_mb() < peak - 150
    # the kernel's resident-memory counters are approximate (per-CPU batches): a high-water mark read again may
    # differ by a fraction of a megabyte
    assert memory.process_peak_mb() >= peak - SLACK_MB


def test_a_cpu_run_has_no_gpu_peak_and_never_asks_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CPU run must not query GPU memory")

    monkeypatch.setattr(tf.config.experimental, "reset_memory_stats", refuse)
    monkeypatch.setattr(tf.config.experimental, "get_memory_info", refuse)
    memory = GpuPeakMemory("cpu")
    memory.reset()
    assert memory.peak_mb() is None


def test_a_gpu_peak_is_the_allocators_peak_in_megabytes_rounded_to_a_tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(tf.config.experimental, "reset_memory_stats", lambda device: calls.append(device))
    statistics = {"current": 0, "peak": 1536 * 2**20 + 70_000}  # 1536.07 MB
    monkeypatch.setattr(tf.config.experimental, "get_memory_info", lambda device: statistics)
    memory = GpuPeakMemory("gpu")
    memory.reset()
    assert calls == ["GPU:0"]
    assert memory.peak_mb() == 1536.1


def test_a_gpu_without_allocator_statistics_has_no_peak_rather_than_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(device: str) -> None:
        raise ValueError(f"no memory statistics for {device}")

    monkeypatch.setattr(tf.config.experimental, "reset_memory_stats", unavailable)
    monkeypatch.setattr(tf.config.experimental, "get_memory_info", unavailable)
    memory = GpuPeakMemory("gpu")
    memory.reset()
    assert memory.peak_mb() is None
