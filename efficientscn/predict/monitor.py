"""What a `predict` run measures and reports: per-case records, peak memory (process and GPU), the JSON report."""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from efficientscn.atomic import write_text_atomic
from efficientscn.model.specs import STAGE_NAMES
from efficientscn.predict.cases import Case
from efficientscn.versions import versions

if TYPE_CHECKING:
    from efficientscn.segmenter import Segmenter

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
    worker: str | None = None
    """The cluster worker that processed the case (None in one process)."""
    lost_workers: list[str] = field(default_factory=list)
    """Cluster workers lost (killed, out of memory) while they processed the case, before another one did it."""

    def warn(self, warnings: list[str]) -> None:
        """Log `warnings` about this case and keep them for the report."""
        for warning in warnings:
            logger.warning("%s: %s", Path(self.input).name, warning)
        self.warnings.extend(warnings)


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

    def __init__(self, *, per_case: bool = True) -> None:
        """`per_case` False: never reset (cases processed at once in one process): each case gets the process's peak
        so far."""
        self._process_peak = _high_water_mark_mb() or peak_rss_mb()
        self._resettable = per_case and self._write_clear_refs()

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


class CaseMeter:
    """The memory the processing of a case peaks at, resident and on a GPU, for its record."""

    def __init__(self, device: str, *, per_case: bool = True) -> None:
        """`per_case` False where several cases are processed at once in this process (see `CasePeakMemory`)."""
        self._memory = CasePeakMemory(per_case=per_case)
        self._gpu_memory = GpuPeakMemory(device)

    @contextlib.contextmanager
    def measuring(self, record: CaseRecord) -> Iterator[CaseRecord]:
        """The block that segments a case: its record is "failed" with the error unless the block sets it done,
        and gets the peak memory of the block."""
        record.status = "failed"  # until it is done
        self._memory.reset()
        self._gpu_memory.reset()
        try:
            yield record
        except Exception as error:
            record.error = str(error)
            raise
        finally:
            record.peak_rss_mb = round(self._memory.case_peak_mb(), 1)
            record.peak_gpu_mb = self._gpu_memory.peak_mb()

    def process_peak_mb(self) -> float:
        """The process's peak resident memory so far, MB."""
        return self._memory.process_peak_mb()


class CaseMonitor:
    """The records of a batch's cases, and the memory each case's segmentation in this process peaked at."""

    def __init__(self, cases: Sequence[Case], device: str) -> None:
        self.records = {case.source: CaseRecord(str(case.source), str(case.output)) for case in cases}
        self.meter = CaseMeter(device)

    def record(self, case: Case) -> CaseRecord:
        return self.records[case.source]

    def close(self) -> None:
        """The end of the batch: the cases a stopped batch did not reach are "not done"."""
        for record in self.records.values():
            if record.status == "pending":
                record.status = "not done"

    def records_list(self) -> list[CaseRecord]:
        """Every case's record, in the batch's order."""
        return list(self.records.values())

    def process_peak_mb(self) -> float:
        """The process's peak resident memory so far, MB."""
        return self.meter.process_peak_mb()


def described_networks(segmenter: Segmenter | None) -> dict[str, Any] | None:
    """What the report says of each loaded network (None where they never loaded)."""
    if segmenter is None:
        return None
    return {stage: network.describe() for stage, network in segmenter.networks.items()}


def run_facts(*, device: str, precision: str, networks: dict[str, Any] | None, utils: Path | None) -> dict[str, Any]:
    """What the report says about the run: versions, device, precision and the models (`described_networks`; none
    where they never loaded)."""
    models: dict[str, Any] = {stage: None for stage in STAGE_NAMES}
    models.update(networks or {})
    models["utils"] = str(utils) if utils else "efficientscn.infer.ops"
    return {"versions": versions(), "device": device, "precision": precision, "models": models}


def write_report(path: Path, run: dict[str, Any], records: list[CaseRecord], process_peak_mb: float) -> None:
    """The JSON report: the run's facts (`run_facts`), the process's peak memory and every case."""
    report = {
        **run,
        "peak_rss_mb": round(process_peak_mb, 1),  # the whole process, model loading included
        "cases": [asdict(record) for record in records],
    }
    write_text_atomic(path, json.dumps(report, indent=1) + "\n", overwrite=True)
    logger.info("wrote %s", path)
