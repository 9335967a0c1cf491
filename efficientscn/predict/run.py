"""`efficientscn predict`: segment a CT, a folder of CTs or a DICOM folder, one independent case after another.

As the original, the models load in the background while the first CT is read, and each next CT is read while
the current one is segmented. A case that fails is reported and the batch goes on; outputs are written
atomically by the run's writers (the label map `<case>.nii.gz` last: `x_0000.nii.gz` -> `x.nii.gz`, a DICOM folder
-> `<folder>.nii.gz`), and cases whose label is already there are kept (skipped) unless `overwrite`, so an
interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path

from efficientscn.batch import BatchReport, Outcome, run_batch
from efficientscn.infer.models import select_device
from efficientscn.model.precision import inference_precision
from efficientscn.predict.batch_files import write_batch_files
from efficientscn.predict.case_runner import CaseRunner, load_segmenter
from efficientscn.predict.cases import Case
from efficientscn.predict.monitor import CaseMonitor, described_networks, run_facts
from efficientscn.predict.options import PredictOptions
from efficientscn.predict.plan import BatchPlan
from efficientscn.predict.read_ahead import ReadAhead
from efficientscn.segmenter import Segmenter
from efficientscn.stopping import StopRequest, stop_on_signals

logger = logging.getLogger(__name__)


class Predictor:
    """One batch of `efficientscn predict` in this process: plans it, segments its cases in turn, reports."""

    def __init__(self, options: PredictOptions) -> None:
        self.options = options
        self.plan = BatchPlan(options)
        self.cases = self.plan.cases
        self.device = select_device(options.device)
        self.precision = inference_precision(self.device, options.precision)
        self.monitor = CaseMonitor(self.cases, self.device)
        self.segmenter: Segmenter | None = None

    def run(self) -> BatchReport:
        """Segment every case; returns what happened to each. Writes the report if asked, even after a failure."""
        todo = self.plan.todo
        logger.info(
            "%d case(s), %d to segment, on the %s in %s", len(self.cases), len(todo), self.device, self.precision
        )
        report, reads, runner = BatchReport(), None, None
        loader, reader = ThreadPoolExecutor(1, "models"), ThreadPoolExecutor(1, "reader")
        stop = StopRequest()
        try:
            with stop_on_signals() as stop:
                if todo:  # nothing to segment: no minutes spent loading models
                    loading = loader.submit(self._load_segmenter, todo[0].source)
                    # the first CT is read while the models load
                    config = self.plan.config
                    reads = ReadAhead(
                        todo, reader, config.max_voxels, config.spacing_fallback, keep_as_read=self.plan.keep_as_read
                    )
                    self.segmenter = _wait_for(loading, stop)
                    if self.segmenter is not None:
                        runner = CaseRunner(
                            self.segmenter, self.plan.writers, self.options.output, force=self.options.force
                        )
                report = run_batch(
                    self.cases,
                    lambda case: self._process(case, runner, reads),
                    name_of=lambda case: case.name,
                    description="predict",
                    progress=self.options.progress,
                    stop=stop,
                )
        finally:
            for executor in (loader, reader):  # stopped: no waiting for models still loading or a CT being read
                executor.shutdown(wait=not stop.requested, cancel_futures=True)
            self.monitor.close()
            run = run_facts(
                device=self.device,
                precision=self.precision,
                networks=described_networks(self.segmenter),
                utils=self.options.utils,
            )
            run.update(self.plan.report_facts())
            plan, output = self.plan, self.options.output
            write_batch_files(report, output, plan.batch_writers, self.cases, plan.report, run, self.monitor)
        return report

    def _load_segmenter(self, first_ct: Path) -> Segmenter:
        """The segmenter of the options; networks in the original's format are imported, checked on `first_ct`."""
        return load_segmenter(self.options, self.device, self.precision, self.plan.config, probe=first_ct)

    def _process(self, case: Case, runner: CaseRunner | None, reads: ReadAhead | None) -> Outcome:
        record = self.monitor.record(case)
        settled = self.plan.settled_before(case, record)
        if settled is not None:
            return settled
        assert reads is not None and runner is not None  # there is something to do
        return runner.run(case, self.plan.resume.claim(case), record, reads, self.monitor.meter)


def _wait_for(loading: Future[Segmenter], stop: StopRequest) -> Segmenter | None:
    """The loaded segmenter, or None if a stop was asked for while it loaded (the loading itself still ends)."""
    while True:
        try:
            return loading.result(timeout=0.2)
        except FuturesTimeout:
            if stop.requested:
                logger.warning("stopping before the first case, while the models load")
                return None


def predict(options: PredictOptions) -> BatchReport:
    """Run `efficientscn predict`, in this process or on the cluster `options.cluster` names; InputError when the
    batch cannot start (no CT, no models, bad output folder, a cluster that cannot run it)."""
    if options.cluster is not None:
        from efficientscn.predict.cluster import ClusterBatch

        return ClusterBatch(options).run()
    return Predictor(options).run()
