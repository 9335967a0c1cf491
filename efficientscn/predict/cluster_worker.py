"""What a Dask worker does for a `predict` batch: one task per case, through the `CaseRunner` a run in one process uses.

The batch's `SegmenterPlugin` is set up on every worker, those there at the start and those that join later: it
checks that the worker sees the batch's files (a token file the client wrote in the output folder, the inputs, the
same version of this package), sizes TensorFlow's thread pools to the worker's threads and loads one `Segmenter`,
which the worker keeps for all the batch's cases. A worker on which this fails keeps the error, and each case sent
to it raises `WorkerUnusable` with it, which stops the batch: the cause is the worker, not the case.

Nothing here imports TensorFlow at module level: the plugin first sets TensorFlow's allocator and threads, which
must be set before TensorFlow starts in the worker's process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin, get_worker

from efficientscn.batch import Outcome, failure_of
from efficientscn.predict.cases import Case
from efficientscn.predict.options import PredictOptions
from efficientscn.predict.resume import Claim
from efficientscn.versions import __version__

if TYPE_CHECKING:
    from distributed import Worker

    from efficientscn.predict.case_runner import CaseRunner
    from efficientscn.predict.monitor import CaseMeter, CaseRecord
    from efficientscn.predict.read_ahead import ReadNow

logger = logging.getLogger(__name__)

STARTED_TOPIC = "efficientscn-case-started"
"""The event a task logs as it starts a case: the client knows which cases are under way, and where."""


class WorkerUnusable(RuntimeError):
    """A worker cannot segment: it does not see the batch's files, or cannot load the models. Stops the batch."""


@dataclass(frozen=True)
class SharedFiles:
    """What every worker must see as the client does: a token file the client wrote, the inputs."""

    token: Path
    token_text: str
    inputs: Path
    version: str = __version__
    """The client's version of this package: a worker's must be the same."""

    def problem(self) -> str | None:
        """Why this process does not see the batch's files, or None."""
        try:
            seen = self.token.read_text(encoding="utf-8")
        except OSError as error:
            return (
                f"cannot read {self.token}, which the client wrote in the output folder ({error.strerror or error}): "
                "the output folder must lie on a file system every worker sees, at the same path"
            )
        if seen != self.token_text:
            return (
                f"{self.token} holds another run's token: this worker sees another folder at the output folder's "
                "path; it must lie on a file system every worker sees, at the same path"
            )
        if self.version != __version__:
            return f"efficientscn {__version__} here, {self.version} on the client: install the same version everywhere"
        if not self.inputs.exists():
            return f"cannot see the inputs {self.inputs}: they must lie on a file system every worker sees"
        return None


@dataclass
class CaseOutcome:
    """What a task sends back: the case's record, and what became of it."""

    record: CaseRecord
    outcome: Outcome | None
    """"done" or "skipped"; None: failed (`failure`)."""
    failure: str | None = None
    traceback: str | None = None
    """The traceback of a failure that points at a bug rather than at the input or the disk."""


@dataclass
class WorkerFacts:
    """What the report says of a worker."""

    device: str
    precision: str
    threads: int
    start_seconds: float
    """From the plugin's arrival to the models loaded: checks, TensorFlow's import, the models."""
    networks: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float | None = None


class SegmenterPlugin(WorkerPlugin):
    """The batch's work on each worker: checks what the worker sees, then loads and keeps its `Segmenter`."""

    def __init__(self, options: PredictOptions, shared: SharedFiles, name: str, *, local: bool = False) -> None:
        """`local`: a worker process the client started on its machine (`local:N`), in the client's terminal: it logs
        errors only (the client gives the rest) and leaves Ctrl-C to the client, which lets the cases under way
        finish."""
        self.options = options
        self.shared = shared
        self.name = name
        self.local = local
        self.error: str | None = None
        self.facts: WorkerFacts | None = None
        self.runner: CaseRunner | None = None
        self.reads: ReadNow | None = None
        self.meter: CaseMeter | None = None

    async def setup(self, worker: Worker) -> None:
        """Runs in a thread, so that the worker keeps answering the scheduler while TensorFlow and the models load."""
        if self.local and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the whole process group
            logging.getLogger("efficientscn").setLevel(logging.ERROR)
        await asyncio.to_thread(self._setup, worker)

    def _setup(self, worker: Worker) -> None:
        start = time.perf_counter()
        try:
            if (problem := self.shared.problem()) is not None:
                raise WorkerUnusable(problem)
            self._load(worker.state.nthreads, _memory_limit(worker))
        except Exception as error:
            self.error = f"worker {worker.address}: {error}"
            logger.error("%s", self.error)
            raise WorkerUnusable(self.error) from error
        assert self.facts is not None
        self.facts.start_seconds = round(time.perf_counter() - start, 2)

    def _load(self, threads: int, memory_limit: int | None) -> None:
        """TensorFlow sized to `threads`, then the models: one `Segmenter` that this worker keeps."""
        _configure_threads(threads)
        from efficientscn.infer.models import select_device
        from efficientscn.infer.pipeline import InferenceConfig
        from efficientscn.infer.runtime import max_voxels_for_memory, memory_bytes
        from efficientscn.model.precision import inference_precision
        from efficientscn.predict.case_runner import CaseRunner, load_segmenter
        from efficientscn.predict.monitor import CaseMeter, described_networks
        from efficientscn.predict.plan import BatchPlan
        from efficientscn.predict.read_ahead import ReadNow

        options = self.options
        device = select_device(options.device)
        precision = inference_precision(device, options.precision)
        memory = min(m for m in (memory_bytes(), memory_limit) if m is not None) if memory_limit else None
        config = InferenceConfig(
            spacing_fallback=options.spacing_fallback,
            max_voxels=max_voxels_for_memory(memory),
            slab_budget_bytes=options.slab_budget_bytes,
        )
        segmenter = load_segmenter(options, device, precision, config, probe=None)
        writers = BatchPlan.writers_for(options)
        self.runner = CaseRunner(segmenter, writers, options.output, force=options.force)
        keep_as_read = any(writer.needs_ct for writer in writers)
        self.reads = ReadNow(config.max_voxels, config.spacing_fallback, keep_as_read=keep_as_read)
        self.meter = CaseMeter(device, per_case=threads == 1)  # cases at once share the process's peak
        self.facts = WorkerFacts(device, precision, threads, 0.0, described_networks(segmenter) or {})

    def teardown(self, worker: Worker) -> None:
        """The batch is over: the worker lets its models go."""
        self.runner = self.reads = self.meter = None


def _memory_limit(worker: Worker) -> int | None:
    """The memory Dask gives the worker (`--memory-limit`), or None."""
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    return int(limit) if limit else None


def _configure_threads(threads: int) -> None:
    """TensorFlow's and ITK's thread pools sized to the worker's threads, and TensorFlow's allocator as a batch in one
    process has it; said in the log where TensorFlow already runs in this worker (they then stay as they are)."""
    from efficientscn.infer.runtime import prepare_environment

    prepare_environment(lone_ct=False)
    import SimpleITK as sitk
    import tensorflow as tf

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow was started by earlier work in this worker
        logger.warning("TensorFlow already runs in worker process %d: its thread pools stay as they are", os.getpid())


def worker_facts(plugin_name: str, dask_worker: Worker) -> dict[str, Any] | None:
    """Run on a worker (`Client.run`, which gives `dask_worker`): the facts of the batch's plugin there, and the
    worker's peak memory so far."""
    plugin = dask_worker.plugins.get(plugin_name)
    if not isinstance(plugin, SegmenterPlugin) or plugin.facts is None:
        return None
    facts = plugin.facts
    if plugin.meter is not None:
        facts.peak_rss_mb = round(plugin.meter.process_peak_mb(), 1)
    return facts.__dict__.copy()


def segment_case(case: Case, claim: Claim, plugin_name: str) -> CaseOutcome:
    """The task of one case: segmented and written on this worker by the batch's plugin, its record sent back.

    Raises `WorkerUnusable` when this worker could not be set up; every other failure is the case's, in its record.
    """
    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, SegmenterPlugin):
        raise WorkerUnusable(f"worker {worker.address}: the batch's plugin {plugin_name} is not set up here")
    if plugin.error is not None or plugin.runner is None:
        raise WorkerUnusable(plugin.error or f"worker {worker.address}: the models are not loaded")
    from efficientscn.predict.monitor import CaseRecord

    assert plugin.reads is not None and plugin.meter is not None
    worker.log_event(STARTED_TOPIC, {"key": str(worker.get_current_task()), "worker": worker.address})
    record = CaseRecord(str(case.source), str(case.output), worker=worker.address)
    try:
        outcome = plugin.runner.run(case, claim, record, plugin.reads, plugin.meter)
    except Exception as error:
        message, is_bug = failure_of(error)
        return CaseOutcome(record, None, message, traceback.format_exc() if is_bug else None)
    return CaseOutcome(record, outcome)
