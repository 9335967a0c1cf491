"""`efficientscn predict`: segment a CT, a folder of CTs or a DICOM folder, one independent case after another.

As the original, the models load in the background while the first CT is read, and each next CT is read while
the current one is segmented. A case that fails is reported and the batch goes on; labels are written
atomically as `<case>.nii.gz` (`x_0000.nii.gz` -> `x.nii.gz`, a DICOM folder -> `<folder>.nii.gz`), and
labels already there are kept (skipped) unless `overwrite`, so an interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import tensorflow as tf

from efficientscn.atomic import ensure_writable_folder, write_text_atomic
from efficientscn.batch import BatchReport, Outcome, run_batch
from efficientscn.errors import InputError
from efficientscn.geometry import (
    OBLIQUE_TOLERANCE_DEGREES,
    Grid,
    axis_aligned_grid,
    obliquity_degrees,
    spacing_with_fallback,
)
from efficientscn.infer.models import STAGES, load_network, models_subfolder, select_device
from efficientscn.infer.pipeline import InferenceConfig, Segmenter, check_voxel_count
from efficientscn.infer.preview import write_preview
from efficientscn.infer.utils_module import load_utils
from efficientscn.io import (
    IMAGE_SUFFIXES,
    Reorientation,
    canonical_reorientation,
    case_id,
    grid_of,
    header_size,
    is_dicom_folder,
    is_image_path,
    read_ct,
    resample_onto,
    write_label,
)
from efficientscn.train.precision import inference_precision
from efficientscn.versions import versions

logger = logging.getLogger(__name__)

LABEL_SUFFIX = ".nii.gz"
PREVIEW_FOLDER = "preview"


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
    preview: bool = False
    report: Path | None = None
    progress: bool = True


@dataclass(frozen=True)
class Case:
    """One CT to segment and where its label goes."""

    source: Path
    output: Path

    @property
    def name(self) -> str:
        return self.source.name


def find_cases(inputs: Path, output: Path) -> list[Case]:
    """The cases of `inputs`: an image file, a DICOM folder, or a folder of image files and DICOM folders.

    Raises InputError when nothing is found or when the output folder is the input folder (or inside a folder of
    CTs): labels never go among the CTs, where a later run would take them for CTs.
    """
    if not inputs.exists():
        raise InputError(f"{inputs}: no such file or folder")
    single = inputs.is_file() or is_dicom_folder(inputs)
    folder = inputs.parent if inputs.is_file() else inputs
    # a folder of CTs would take labels written inside it for CTs on the next run; a single CT's folder is its own
    inside = output.resolve() == folder.resolve() or (not single and folder.resolve() in output.resolve().parents)
    if inside or (inputs.is_dir() and single and folder.resolve() in output.resolve().parents):
        raise InputError(f"{output}: the output folder is (inside) the input folder {folder}; choose another one")
    if single:
        sources = [inputs]
    else:
        entries = sorted(p for p in inputs.iterdir() if not p.name.startswith("."))
        sources = [p for p in entries if is_image_path(p)]
        ignored = [p.name for p in entries if p not in sources]
        if ignored:
            logger.warning("%s: ignoring %d file(s) without an image ending: %s", inputs, len(ignored), ignored[:5])
        if not sources:
            raise InputError(f"{inputs}: no CT found (image files {', '.join(IMAGE_SUFFIXES)} or DICOM folders)")
    return [Case(source, output / f"{case_id(source)}{LABEL_SUFFIX}") for source in sources]


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


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CasePeakMemory:
    """Peak resident memory per case and of the whole process.

    On Linux each case's peak is VmHWM after resetting it through /proc/self/clear_refs; that reset also resets
    the kernel's process peak, so the process peak is kept here. Elsewhere both are the process's peak so far.
    """

    def __init__(self) -> None:
        self._process_peak = peak_rss_mb()
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
        if self._resettable:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return peak_rss_mb()

    def process_peak_mb(self) -> float:
        """The peak of the whole process so far, MB."""
        return max(self._process_peak, self.case_peak_mb())


OUTSIDE_SCAN_HU = -1024.0
"""What an oblique CT's axis-aligned grid holds beyond the scan: air."""


@dataclass
class _ReadCase:
    """A CT read, its voxels seen on the canonical grid, ready for the segmenter."""

    ct: sitk.Image
    """The CT processed: as read, or resampled onto an axis-aligned grid if oblique; `array` is a view of it."""
    array: np.ndarray
    spacing_zyx: tuple[float, float, float]
    reorientation: Reorientation
    seconds: float
    oblique_grid: Grid | None = None
    """The grid of an oblique CT as read, where its label goes back to (nearest neighbour); None if not oblique."""

    def label_image(self, label_zyx: np.ndarray) -> sitk.Image:
        """The label on the exact grid of the CT as read, from the segmenter's label on the canonical grid."""
        label = self.reorientation.to_original_image(label_zyx)
        if self.oblique_grid is None:
            return label
        return resample_onto(label, self.oblique_grid, sitk.sitkNearestNeighbor, 0)


def _read_case(case: Case, config: InferenceConfig) -> _ReadCase:
    """Read a CT and see it on the canonical grid. An oblique CT is first resampled (linear) onto an axis-aligned
    grid with its own spacings, since the networks learnt the patient axis-aligned (their training samples are
    drawn along the patient axes); treating its index axes as patient axes, as the original does, would show them a
    rotated patient (docs/fidelity.md #36)."""
    start = time.perf_counter()
    check_voxel_count(header_size(case.source), config)  # a scan too large to hold is refused before it is read
    ct = read_ct(case.source)
    oblique_grid = None
    angle = obliquity_degrees(ct.GetDirection())
    if angle > OBLIQUE_TOLERANCE_DEGREES:
        oblique_grid = grid_of(ct)
        aligned = axis_aligned_grid(oblique_grid)
        check_voxel_count(aligned.size, config)
        logger.info(
            "%s: oblique by %.1f degrees, resampled onto an axis-aligned grid of %s", case.name, angle, aligned.size
        )
        ct = resample_onto(ct, aligned, sitk.sitkLinear, OUTSIDE_SCAN_HU)
    reorientation = canonical_reorientation(ct)
    spacing_xyz = spacing_with_fallback(reorientation.canonical_spacing_xyz, str(case.source))
    array = reorientation.to_canonical_array(sitk.GetArrayViewFromImage(ct))  # no copy of the CT
    return _ReadCase(ct, array, spacing_xyz[::-1], reorientation, time.perf_counter() - start, oblique_grid)


class _ReadAhead:
    """Reads the cases in a background thread, one ahead of the case being segmented (at most two in memory)."""

    def __init__(self, cases: list[Case], executor: ThreadPoolExecutor, config: InferenceConfig) -> None:
        self._cases = cases
        self._config = config
        self._executor = executor
        self._pending: dict[int, Future[_ReadCase]] = {}
        self._submit(0)

    def _submit(self, index: int) -> None:
        if index < len(self._cases) and index not in self._pending:
            self._pending[index] = self._executor.submit(_read_case, self._cases[index], self._config)

    def take(self, case: Case) -> _ReadCase:
        """The read CT of `case` (waiting for it if needed), after starting to read the one after it."""
        index = self._cases.index(case)
        self._submit(index)
        self._submit(index + 1)
        return self._pending.pop(index).result()


def load_segmenter(options: PredictOptions, device: str, precision: str, config: InferenceConfig) -> Segmenter:
    """Both networks and the utils module of `options`, loaded for `device` and `precision` and traced."""
    localization = load_network(models_subfolder(options.models, "localization"), "localization", device, precision)
    segmentation = load_network(models_subfolder(options.models, "segmentation"), "segmentation", device, precision)
    segmenter = Segmenter(localization, segmentation, load_utils(options.utils, device), config)
    segmenter.warm_up()
    return segmenter


class Predictor:
    """One batch of `efficientscn predict`: finds the cases, segments them, writes labels, previews and report."""

    def __init__(self, options: PredictOptions) -> None:
        self.options = options
        self.cases = find_cases(options.inputs, options.output)
        ensure_writable_folder(options.output)
        for stage in STAGES:  # a missing model stops the batch now, not once per case
            models_subfolder(options.models, stage)
        self.device = select_device(options.device)
        self.precision = inference_precision(self.device, options.precision)
        self.records = {case.source: CaseRecord(str(case.source), str(case.output)) for case in self.cases}
        self._label_owner: dict[Path, Path] = {}  # the first case of each label name; later ones are refused
        for case in self.cases:
            self._label_owner.setdefault(case.output, case.source)
        self.segmenter: Segmenter | None = None
        self.config = InferenceConfig()
        self._memory = CasePeakMemory()

    def run(self) -> BatchReport:
        """Segment every case; returns what happened to each. Writes the report if asked, even after a failure."""
        todo = [
            case
            for case in self.cases
            if self._label_owner[case.output] == case.source and (self.options.overwrite or not case.output.exists())
        ]
        logger.info(
            "%d case(s), %d to segment, on the %s in %s", len(self.cases), len(todo), self.device, self.precision
        )
        report = BatchReport()
        try:
            with ThreadPoolExecutor(1, "models") as loader, ThreadPoolExecutor(1, "reader") as reader:
                if todo:  # nothing to segment: no minutes spent loading models
                    loading = loader.submit(load_segmenter, self.options, self.device, self.precision, self.config)
                    reads = _ReadAhead(todo, reader, self.config)  # the first CT is read while the models load
                    self.segmenter = loading.result()
                report = run_batch(
                    self.cases,
                    lambda case: self._process(case, case in todo, reads if todo else None),
                    name_of=lambda case: case.name,
                    description="predict",
                    progress=self.options.progress,
                )
        finally:
            if self.options.report is not None:
                self._write_report()
        return report

    def _process(self, case: Case, needed: bool, reads: _ReadAhead | None) -> Outcome:
        record = self.records[case.source]
        owner = self._label_owner[case.output]
        if owner != case.source:
            record.status, record.error = "failed", f"its label {case.output.name} is that of {owner.name}: rename one"
            raise InputError(record.error)
        if not needed:
            record.status = "skipped"
            logger.info("%s: %s exists, skipped", case.name, case.output)
            return "skipped"
        record.status = "failed"  # until it is done
        assert reads is not None and self.segmenter is not None  # there is something to do
        self._memory.reset()
        self._reset_gpu_peak()
        try:
            read = reads.take(case)
            record.seconds["read"] = read.seconds
            segmentation = self.segmenter.segment(read.array, read.spacing_zyx)
            record.seconds.update(segmentation.seconds)
            record.details = segmentation.details
            start = time.perf_counter()
            write_label(read.label_image(segmentation.label), case.output, overwrite=self.options.overwrite)
            record.seconds["write"] = time.perf_counter() - start
            if self.options.preview:
                preview = self.options.output / PREVIEW_FOLDER / f"{case_id(case.source)}.png"
                # the preview shows the label just written, so it replaces an older one of the same case
                write_preview(read.array, segmentation.label, read.spacing_zyx, preview, overwrite=True)
            record.status = "done"
            return "done"
        except Exception as error:
            record.error = str(error)
            raise
        finally:
            record.peak_rss_mb = round(self._memory.case_peak_mb(), 1)
            record.peak_gpu_mb = self._gpu_peak_mb()

    def _reset_gpu_peak(self) -> None:
        if self.device == "gpu":
            with contextlib.suppress(RuntimeError, ValueError):  # no allocator statistics: the report says None
                tf.config.experimental.reset_memory_stats("GPU:0")

    def _gpu_peak_mb(self) -> float | None:
        if self.device != "gpu":
            return None
        try:
            return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
        except (RuntimeError, ValueError):
            return None

    def _write_report(self) -> None:
        segmenter = self.segmenter
        report = {
            "versions": versions(),
            "device": self.device,
            "precision": self.precision,
            "models": {
                "localization": segmenter.localization.describe() if segmenter else None,
                "segmentation": segmenter.segmentation.describe() if segmenter else None,
                "utils": str(self.options.utils) if self.options.utils else "efficientscn.infer.ops",
            },
            "peak_rss_mb": round(self._memory.process_peak_mb(), 1),  # the whole process, model loading included
            "cases": [asdict(record) for record in self.records.values()],
        }
        write_text_atomic(self.options.report, json.dumps(report, indent=1) + "\n", overwrite=True)
        logger.info("wrote %s", self.options.report)


def predict(options: PredictOptions) -> BatchReport:
    """Run `efficientscn predict`; InputError when the batch cannot start (no CT, no models, bad output folder)."""
    return Predictor(options).run()
