"""`efficientscn predict`: segment a CT, a folder of CTs or a DICOM folder, one independent case after another.

As the original, the models load in the background while the first CT is read, and each next CT is read while
the current one is segmented. A case that fails is reported and the batch goes on; outputs are written
atomically by the run's writers (the label map `<case>.nii.gz` first: `x_0000.nii.gz` -> `x.nii.gz`, a DICOM folder
-> `<folder>.nii.gz`), and cases whose label is already there are kept (skipped) unless `overwrite`, so an
interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from efficientscn.atomic import NAME_MAX, ensure_writable_folder
from efficientscn.batch import BatchReport, Outcome, run_batch
from efficientscn.errors import InputError
from efficientscn.imaging.geometry import SpacingFallback
from efficientscn.imaging.names import case_id
from efficientscn.infer.cases import (
    Case,
    ReadAhead,
    case_lock,
    find_sources,
    label_owners,
)
from efficientscn.infer.models import models_subfolder, select_device
from efficientscn.infer.monitor import CasePeakMemory, CaseRecord, GpuPeakMemory, write_report
from efficientscn.infer.pipeline import InferenceConfig, check_processable
from efficientscn.infer.plausibility import check_intensities, check_organs
from efficientscn.infer.runtime import SLAB_BUDGET_BYTES
from efficientscn.infer.segmenter import Segmenter
from efficientscn.infer.statistics import read_statistics_json, write_statistics_csv
from efficientscn.infer.writers import (
    CaseResult,
    LabelWriter,
    StatisticsWriter,
    case_output,
    companion_writers,
    leftovers_of,
)
from efficientscn.model.precision import inference_precision
from efficientscn.model.specs import STAGE_NAMES
from efficientscn.stopping import StopRequest, stop_on_signals
from efficientscn.versions import versions

logger = logging.getLogger(__name__)

STATISTICS_CSV = "statistics.csv"
"""The batch's organ statistics, one row per case and organ, beside the cases' `<case>.json`."""


@dataclass(frozen=True)
class PredictOptions:
    """What `efficientscn predict` was asked to do."""

    inputs: Path
    output: Path
    models: Path
    device: str | None = None
    """"cpu", "gpu" or None: a GPU when one is visible."""
    precision: str = "auto"
    utils: Path | None = None
    """A traced tf_utils_module to use instead of the functions in `efficientscn.infer.ops`."""
    overwrite: bool = False
    label_format: str | None = None
    """The label's format (`writers.LABEL_FORMATS`); None: NIfTI, or the CT's own format for MetaImage and NRRD."""
    dicom_seg: bool = False
    """Also write a DICOM-SEG of each DICOM series."""
    statistics: bool = False
    """Also write each case's organ statistics, `<case>.json`, and the batch's `statistics.csv`."""
    preview: bool = False
    report: Path | None = None
    progress: bool = True
    spacing_fallback: SpacingFallback = "missing"
    """When a spacing of exactly 1,1,1 mm is taken for a missing one (see `imaging.geometry.SPACING_FALLBACKS`)."""
    force: bool = False
    """Segment an input the plausibility checks refuse as clearly not an abdominal CT in HU (warning instead)."""
    import_originals: bool = True
    """Import a network in the original's format (verified, cached) instead of running its graph as saved."""
    slab_budget_bytes: int | None = SLAB_BUDGET_BYTES
    """The networks' full-resolution levels run by slabs fitting this budget; None: whole (`InferenceConfig`)."""


def _wait_for(loading: Future[Segmenter], stop: StopRequest) -> Segmenter | None:
    """The loaded segmenter, or None if a stop was asked for while it loaded (the loading itself still ends)."""
    while True:
        try:
            return loading.result(timeout=0.2)
        except FuturesTimeout:
            if stop.requested:
                logger.warning("stopping before the first case, while the models load")
                return None


class Predictor:
    """One batch of `efficientscn predict`: finds the cases, segments them, has them written, reports."""

    def __init__(self, options: PredictOptions) -> None:
        self.options = options
        self.label = case_output(options.label_format)  # its file marks a case as done
        companions = companion_writers(
            options.label_format, dicom_seg=options.dicom_seg, statistics=options.statistics, preview=options.preview
        )
        self.writers: list[LabelWriter] = [*companions, self.label]
        """In the order they write: the case's label last, so that its file marks a case with all its outputs."""
        sources = find_sources(options.inputs, options.output)
        if (options.dicom_seg or options.label_format == "dicom-seg") and not any(path.is_dir() for path in sources):
            asked = "--format dicom-seg" if options.label_format == "dicom-seg" else "--dicom-seg"
            raise InputError(
                f"{options.inputs}: {asked}: no DICOM series among the inputs; a DICOM-SEG references the series it "
                "segments"
            )
        label = self.label
        self.cases = [Case(source, label.path(options.output, case_id(source), source)) for source in sources]
        ensure_writable_folder(options.output)
        if options.report is not None:  # refused now, not after the batch
            if options.report.is_dir():
                raise InputError(f"{options.report}: a folder; --report names the JSON file to write")
            ensure_writable_folder(options.report.parent)
        for stage in STAGE_NAMES:  # a missing model stops the batch now, not once per case
            models_subfolder(options.models, stage)
        self.device = select_device(options.device)
        self.precision = inference_precision(self.device, options.precision)
        self.records = {case.source: CaseRecord(str(case.source), str(case.output)) for case in self.cases}
        self._label_owner = label_owners(self.cases)
        self._replace: set[Path] = set()
        """Labels found unusable: replaced by the new ones without --overwrite."""
        self._refused: dict[Path, str] = {}
        """Outputs that are not labels of this tool: never replaced, their cases fail with this message."""
        self.segmenter: Segmenter | None = None
        self.config = InferenceConfig(
            spacing_fallback=options.spacing_fallback, slab_budget_bytes=options.slab_budget_bytes
        )
        self._memory = CasePeakMemory()
        self._gpu_memory = GpuPeakMemory(self.device)

    def run(self) -> BatchReport:
        """Segment every case; returns what happened to each. Writes the report if asked, even after a failure."""
        todo = [case for case in self.cases if self._label_owner[case.output] == case.source and self._to_do(case)]
        logger.info(
            "%d case(s), %d to segment, on the %s in %s", len(self.cases), len(todo), self.device, self.precision
        )
        report = BatchReport()
        loader, reader = ThreadPoolExecutor(1, "models"), ThreadPoolExecutor(1, "reader")
        stop = StopRequest()
        try:
            with stop_on_signals() as stop:
                if todo:  # nothing to segment: no minutes spent loading models
                    loading = loader.submit(self._load_segmenter, todo[0].source)
                    # the first CT is read while the models load
                    measured_as_read = self.options.statistics or self.options.preview  # organ statistics
                    reads = ReadAhead(
                        todo,
                        reader,
                        self.config.max_voxels,
                        self.config.spacing_fallback,
                        keep_as_read=measured_as_read,
                    )
                    self.segmenter = _wait_for(loading, stop)
                report = run_batch(
                    self.cases,
                    lambda case: self._process(case, case in todo, reads if todo else None),
                    name_of=lambda case: case.name,
                    description="predict",
                    progress=self.options.progress,
                    stop=stop,
                )
        finally:
            for executor in (loader, reader):  # stopped: no waiting for models still loading or a CT being read
                executor.shutdown(wait=not stop.requested, cancel_futures=True)
            for record in self.records.values():
                if record.status == "pending":  # a stopped batch: the cases it did not reach
                    record.status = "not done"
            if self.options.statistics:
                try:
                    self._write_statistics_table()
                except OSError as error:  # the report still follows
                    logger.error("%s not written: %s", STATISTICS_CSV, error)
            if self.options.report is not None:
                self._write_report()
        return report

    def _write_statistics_table(self) -> None:
        """`statistics.csv`: the statistics of every case of the batch that is done (its label is there), from this
        run or an earlier."""
        writer, rows = StatisticsWriter(), {}
        for case in self.cases:
            path = writer.path(self.options.output, case.id, case.source)
            if path.exists() and case.output.exists():
                try:
                    rows[case.id] = read_statistics_json(path)
                except (InputError, OSError) as error:
                    logger.warning("%s: left out of %s: %s", case.name, STATISTICS_CSV, error)
        if rows:
            write_statistics_csv(self.options.output / STATISTICS_CSV, rows)

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

    def _to_do(self, case: Case) -> bool:
        """Whether the case is to be segmented: no label yet, asked to overwrite it, or one that cannot be kept;
        never when that would replace a file that is not a label of this tool (the case then fails)."""
        if len(os.fsencode(case.output.name)) > NAME_MAX:
            self._refused[case.output] = (
                f"{case.output}: the label's name is {len(os.fsencode(case.output.name))} bytes long, more than file "
                f"systems allow ({NAME_MAX}): rename the CT"
            )
            return False
        refusal = self.label.refusal(case.source)
        if refusal is not None:
            self._refused[case.output] = refusal
            return False
        if not case.output.exists():
            return True
        if not self.options.overwrite:
            problem = self.label.existing_problem(case.output, case.source)
            if problem is None:
                return False
            logger.warning("%s: its label %s cannot be kept (%s): segmenting it again", case.name, case.output, problem)
            self._replace.add(case.output)
        try:
            self.label.refuse_replacing(case.output)
        except InputError as error:
            self._refused[case.output] = str(error)
            return False
        return True

    def _process(self, case: Case, needed: bool, reads: ReadAhead | None) -> Outcome:
        record = self.records[case.source]
        owner = self._label_owner[case.output]
        if owner != case.source:
            record.status, record.error = "failed", f"its label {case.output.name} is that of {owner.name}: rename one"
            raise InputError(record.error)
        if case.output in self._refused:
            record.status, record.error = "failed", self._refused[case.output]
            raise InputError(record.error)
        if not needed:
            record.status = "skipped"
            logger.info("%s: %s exists, skipped", case.name, case.output)
            return "skipped"
        assert reads is not None and self.segmenter is not None  # there is something to do
        try:
            with case_lock(case.output) as held:  # two runs on one folder share its cases
                overwrite = self.options.overwrite or case.output in self._replace
                replacing = held and case.output in self._replace
                if replacing and self.label.existing_problem(case.output, case.source) is None:
                    overwrite = False  # another run has redone it meanwhile
                if not held or (case.output.exists() and not overwrite):
                    reads.drop(case)
                    record.status = "skipped"
                    logger.info("%s: %s by another run, skipped", case.name, "being done" if not held else "done")
                    return "skipped"
                self._remove_leftovers(case)
                return self._segment(case, reads, overwrite=overwrite)
        except OSError as error:
            if record.status == "pending":  # failed before its segmentation started (the lock, the clean-up)
                record.status, record.error = "failed", str(error)
                reads.drop(case)
            raise

    def _remove_leftovers(self, case: Case) -> None:
        """Remove the temporary files an interrupted run left for this case (its lock is held: none is in use)."""
        for writer in self.writers:
            path = writer.path(self.options.output, case.id, case.source)
            for leftover in leftovers_of(path):
                leftover.unlink(missing_ok=True)
                logger.info("%s: removed %s, left by an interrupted run", case.name, leftover.name)

    def _segment(self, case: Case, reads: ReadAhead, *, overwrite: bool) -> Outcome:
        """Read, segment and write one case whose lock is held."""
        assert self.segmenter is not None
        record = self.records[case.source]
        record.status = "failed"  # until it is done
        self._memory.reset()
        self._gpu_memory.reset()
        try:
            ct, record.seconds["read"] = reads.take(case)
            check_processable(ct.array_zyx.shape, ct.spacing_zyx, self.config)  # its reason comes first
            self._check_input(case, ct.array_zyx)
            segmentation = self.segmenter.segment_canonical(ct)
            self._warn(case, check_organs(segmentation.label, ct.spacing_zyx))
            record.seconds.update(segmentation.seconds)
            record.details = {"spacing": ct.spacing_source, **segmentation.details}
            start = time.perf_counter()
            result = CaseResult(ct, segmentation.label, ct.restore(segmentation.label), case.source)
            restore_seconds = time.perf_counter() - start
            for writer in self.writers:  # the label last: its file marks the case as done
                if (refusal := writer.refusal(case.source)) is not None:  # a companion that does not apply
                    self._warn(case, [f"no {writer.name}: {refusal}"])
                    continue
                path = writer.path(self.options.output, case.id, case.source)
                start = time.perf_counter()
                # a companion belongs to this case, which is not done: one of an earlier attempt is replaced
                writer.write(result, path, overwrite=overwrite if writer is self.label else True)
                record.written.append(str(path))
                record.seconds[writer.name] = time.perf_counter() - start
            record.seconds[self.label.name] += restore_seconds  # the way back onto the CT's grid
            record.status = "done"
            return "done"
        except Exception as error:
            record.error = str(error)
            raise
        finally:
            record.peak_rss_mb = round(self._memory.case_peak_mb(), 1)
            record.peak_gpu_mb = self._gpu_memory.peak_mb()

    def _check_input(self, case: Case, ct_zyx: np.ndarray) -> None:
        """Refuse an input that is clearly not an abdominal CT in HU, unless forced; warn about an odd one."""
        findings = check_intensities(ct_zyx)
        if findings.refusals and not self.options.force:
            raise InputError(
                f"{case.source}: not like a CT in Hounsfield units: {'; '.join(findings.refusals)} "
                "(--force segments it anyway)"
            )
        self._warn(case, [*findings.refusals, *findings.warnings])

    def _warn(self, case: Case, warnings: list[str]) -> None:
        for warning in warnings:
            logger.warning("%s: %s", case.name, warning)
        self.records[case.source].warnings.extend(warnings)

    def _write_report(self) -> None:
        assert self.options.report is not None
        segmenter = self.segmenter
        run = {
            "versions": versions(),
            "device": self.device,
            "precision": self.precision,
            "models": {
                "localization": segmenter.pipeline.localization.describe() if segmenter else None,
                "segmentation": segmenter.pipeline.segmentation.describe() if segmenter else None,
                "utils": str(self.options.utils) if self.options.utils else "efficientscn.infer.ops",
            },
        }
        write_report(self.options.report, run, list(self.records.values()), self._memory.process_peak_mb())


def predict(options: PredictOptions) -> BatchReport:
    """Run `efficientscn predict`; InputError when the batch cannot start (no CT, no models, bad output folder)."""
    return Predictor(options).run()
