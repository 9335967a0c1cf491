"""What a `predict` run measures and reports: per-case records, peak memory (process and GPU), the JSON report."""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from efficientscn.atomic import write_text_atomic

logger = logging.getLogger(__name__)


@dataclass
class CaseRecord:
    """One case in the report."""

    input: str
    output: str
    status: str = "pending"
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    """Peak resident memory while this case was processed (Linux; elsewhere the process's peak so far)."""
    peak_gpu_mb: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """What the plausibility checks found odd about the input or the organs found."""
    written: list[str] = field(default_factory=list)
    """The files this run wrote for the case: its label, then DICOM-SEG, statistics, preview as asked."""


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, MB (getrusage counts kilobytes on Linux, bytes on macOS)."""
    unit = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20


def _high_water_mark_mb() -> float | None:
    """VmHWM, MB, on Linux: the peak of this process's own memory (getrusage may report the peak of the process
    that started it), since the last reset through /proc/self/clear_refs."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


class CasePeakMemory:
    """Peak resident memory per case and of the whole process.

    On Linux each case's peak is VmHWM after resetting it through /proc/self/clear_refs; that reset also resets
    the kernel's process peak, so the process peak is kept here. Elsewhere both are the process's peak so far.
    """

    def __init__(self) -> None:
        self._process_peak = _high_water_mark_mb() or peak_rss_mb()
        self._resettable = self._write_clear_refs()

    @staticmethod
    def _write_clear_refs() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def reset(self) -> None:
        """Start measuring a new case."""
        if self._resettable:
            self._process_peak = max(self._process_peak, self.case_peak_mb())
            self._write_clear_refs()

    def case_peak_mb(self) -> float:
        """The peak since the last `reset`, MB."""
        return (self._resettable and _high_water_mark_mb()) or peak_rss_mb()

    def process_peak_mb(self) -> float:
        """The peak of the whole process so far, MB."""
        return max(self._process_peak, self.case_peak_mb())


class GpuPeakMemory:
    """Peak GPU memory per case through TensorFlow's allocator statistics; None on a CPU or without statistics."""

    def __init__(self, device: str) -> None:
        self._on_gpu = device == "gpu"

    def reset(self) -> None:
        if self._on_gpu:
            with contextlib.suppress(RuntimeError, ValueError):  # no allocator statistics: the report says None
                tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_mb(self) -> float | None:
        if not self._on_gpu:
            return None
        try:
            return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
        except (RuntimeError, ValueError):
            return None


def write_report(path: Path, run: dict[str, Any], records: list[CaseRecord], process_peak_mb: float) -> None:
    """The JSON report: the run's facts (versions, device, models...), the process's peak memory and every case."""
    report = {
        **run,
        "peak_rss_mb": round(process_peak_mb, 1),  # the whole process, model loading included
        "cases": [asdict(record) for record in records],
    }
    write_text_atomic(path, json.dumps(report, indent=1) + "\n", overwrite=True)
    logger.info("wrote %s", path)
