"""`efficientscn predict`: segment a CT, a folder of CTs or a DICOM folder, one independent case after another.

As the original, the models load in the background while the first CT is read, and each next CT is read while
the current one is segmented. A case that fails is reported and the batch goes on; outputs are written
atomically by the run's writers (the label map `<case>.nii.gz` last: `x_0000.nii.gz` -> `x.nii.gz`, a DICOM folder
-> `<folder>.nii.gz`), and cases whose label is already there are kept (skipped) unless `overwrite`, so an
interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from functools import partial
from pathlib import Path

from efficientscn.atomic import ensure_writable_folder
from efficientscn.batch import BatchReport, Outcome, run_batch
from efficientscn.errors import InputError, LabelMapGiven
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.names import case_id
from efficientscn.infer.models import select_device
from efficientscn.infer.pipeline import InferenceConfig
from efficientscn.model.folder import ModelsFolder
from efficientscn.model.precision import inference_precision
from efficientscn.outputs.writers import CaseResult, CaseWriter, case_output, companion_writers, write_case
from efficientscn.predict.batch_files import check_report_room, write_batch_files
from efficientscn.predict.cases import Case, find_sources, without_label_maps
from efficientscn.predict.locks import case_lock
from efficientscn.predict.monitor import CaseMonitor, CaseRecord, run_facts
from efficientscn.predict.options import PredictOptions
from efficientscn.predict.plausibility import gate_input, gate_organs
from efficientscn.predict.read_ahead import ReadAhead
from efficientscn.predict.resume import Resume, remove_leftovers
from efficientscn.segmenter import Segmenter
from efficientscn.stopping import StopRequest, stop_on_signals

logger = logging.getLogger(__name__)


class Predictor:
    """One batch of `efficientscn predict`: finds the cases, segments them, has them written, reports."""

    def __init__(self, options: PredictOptions) -> None:
        self.options = options
        self.label = case_output(options.label_format)  # its file marks a case as done
        self.writers: list[CaseWriter] = [*companion_writers(options.companions, self.label), self.label]
        """In the order they write: the case's label last, so that its file marks a case with all its outputs."""
        sources = without_label_maps(find_sources(options.inputs, options.output), options.inputs)
        for writer in self.writers:  # an output none of the inputs can have stops the batch now
            if (refusal := writer.batch_refusal(sources)) is not None:
                flag = f"--format {options.label_format}" if writer is self.label else f"--{writer.name}"
                raise InputError(f"{options.inputs}: {flag}: {refusal}")
        self.cases = [Case(source, self.label.path(options.output, case_id(source), source)) for source in sources]
        ensure_writable_folder(options.output)
        if options.report is not None:  # refused now, not after the batch
            if options.report.is_dir():
                raise InputError(f"{options.report}: a folder; --report names the JSON file to write")
            ensure_writable_folder(options.report.parent)
            check_report_room(options.report, len(self.cases))
        ModelsFolder(options.models).stage_folders()  # a missing model stops the batch now, not once per case
        self.device = select_device(options.device)
        self.precision = inference_precision(self.device, options.precision)
        self.config = InferenceConfig(spacing_fallback=options.spacing_fallback)
        self.resume = Resume(self.cases, self.label, overwrite=options.overwrite)
        self.monitor = CaseMonitor(self.cases, self.device)
        self.segmenter: Segmenter | None = None

    def run(self) -> BatchReport:
        """Segment every case; returns what happened to each. Writes the report if asked, even after a failure."""
        todo = self.resume.todo
        logger.info(
            "%d case(s), %d to segment, on the %s in %s", len(self.cases), len(todo), self.device, self.precision
        )
        report, reads = BatchReport(), None
        loader, reader = ThreadPoolExecutor(1, "models"), ThreadPoolExecutor(1, "reader")
        stop = StopRequest()
        try:
            with stop_on_signals() as stop:
                if todo:  # nothing to segment: no minutes spent loading models
                    loading = loader.submit(self._load_segmenter, todo[0].source)
                    keep_as_read = any(writer.needs_ct_as_read for writer in self.writers)
                    # the first CT is read while the models load
                    reads = ReadAhead(
                        todo, reader, self.config.max_voxels, self.config.spacing_fallback, keep_as_read=keep_as_read
                    )
                    self.segmenter = _wait_for(loading, stop)
                report = run_batch(
                    self.cases,
                    lambda case: self._process(case, case in todo, reads),
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
                device=self.device, precision=self.precision, segmenter=self.segmenter, utils=self.options.utils
            )
            output, path = self.options.output, self.options.report
            write_batch_files(report, output, self.writers, self.cases, path, run, self.monitor)
        return report

    def _load_segmenter(self, first_ct: Path) -> Segmenter:
        """The segmenter of the options; networks in the original's format are imported, checked on `first_ct`."""
        options = self.options
        return Segmenter(
            options.models,
            device=self.device,
            precision=self.precision,
            utils=options.utils,
            import_originals=options.import_originals,
            config=self.config,
            probe=first_ct,
        )

    def _process(self, case: Case, needed: bool, reads: ReadAhead | None) -> Outcome:
        record = self.monitor.record(case)
        if (refusal := self.resume.refusal(case)) is not None:
            record.status, record.error = "failed", refusal
            raise InputError(refusal)
        if not needed:
            record.status = "skipped"
            logger.info("%s: %s exists, skipped", case.name, case.output)
            return "skipped"
        assert reads is not None and self.segmenter is not None  # there is something to do
        try:
            with case_lock(case.output) as held:  # two runs on one folder share its cases
                overwrite = self.resume.claim(case) if held else None
                if overwrite is None:
                    reads.drop(case)
                    record.status = "skipped"
                    logger.info("%s: %s by another run, skipped", case.name, "being done" if not held else "done")
                    return "skipped"
                remove_leftovers(case, self.writers, self.options.output)
                return self._segment(case, reads, overwrite=overwrite)
        except OSError as error:
            if record.status == "pending":  # failed before its segmentation started (the lock, the clean-up)
                record.status, record.error = "failed", str(error)
                reads.drop(case)
            raise

    def _segment(self, case: Case, reads: ReadAhead, *, overwrite: bool) -> Outcome:
        """Read, segment and write one case whose lock is held."""
        assert self.segmenter is not None
        with self.monitor.measuring(case) as record:
            try:
                ct, record.seconds["read"] = reads.take(case)
            except LabelMapGiven as error:  # a label map not told by its header: skipped, as those told by it
                record.status = "skipped"
                record.warn([f"skipped: {str(error).removeprefix(f'{case.source}: ')}"])
                return "skipped"
            record.warnings.extend(ct.reading_warnings)  # logged when read; the label depends on what they assume
            segmentation = self.segmenter.segment_canonical(ct, gate=partial(self._gate, case, record))
            record.warn(gate_organs(segmentation.label, ct.spacing_zyx, case.source))  # no organ: the case fails
            record.seconds.update(segmentation.seconds)
            record.details = {"spacing": ct.spacing_source, **segmentation.details}
            start = time.perf_counter()
            notice = f"DEMONSTRATION MODELS: {self.segmenter.demonstration}" if self.segmenter.demonstration else None
            result = CaseResult(ct, segmentation.label, ct.restore(segmentation.label), case.source, notice)
            restore_seconds = time.perf_counter() - start
            for written in write_case(result, self.writers, self.options.output, case.id, overwrite=overwrite):
                if written.path is None:  # a companion that does not apply to this CT
                    record.warn([f"no {written.name}: {written.refusal}"])
                    continue
                record.written.append(str(written.path))
                record.seconds[written.name] = written.seconds
            record.seconds[self.label.name] += restore_seconds  # the way back onto the CT's grid
            record.status = "done"
        return "done"

    def _gate(self, case: Case, record: CaseRecord, ct: CanonicalCT) -> None:
        """The plausibility check of a CT the networks can take, before they run: refused, or warned about."""
        record.warn(gate_input(ct.array_zyx, case.source, force=self.options.force))


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
    """Run `efficientscn predict`; InputError when the batch cannot start (no CT, no models, bad output folder)."""
    return Predictor(options).run()
