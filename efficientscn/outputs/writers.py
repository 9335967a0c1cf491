"""What `predict` writes for a case, behind one small interface: the seam new output formats plug into.

A `CaseWriter` names its output for a case and writes it from the `CaseResult`. One of a run's writers is the case's
label (a label map, or a DICOM output with `--format dicom-seg` or `--format rtstruct`), whose presence marks a case
as done, so it writes last and also judges an existing file (`CaseOutput`); the others are its companions, each
asked for by the `predict` flag of its name (`COMPANIONS`).

A new output format: a module in `efficientscn.outputs` that writes it, a `CaseWriter` subclass here, one entry in
`COMPANIONS` (and in `LABEL_FORMATS` if it can be the case's label); the command line builds its flag from the entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.atomic import leftover_temporaries
from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.names import LABEL_SUFFIX, image_suffix, label_suffix_for
from efficientscn.imaging.read import is_dicom_folder, read_ct, read_label
from efficientscn.imaging.write import write_label
from efficientscn.outputs.existing import existing_label_problem, label_grid_problem, refuse_replacing_foreign_file
from efficientscn.outputs.preview import write_preview
from efficientscn.outputs.statistics import (
    OrganStatistics,
    organ_statistics,
    read_statistics_json,
    write_statistics_csv,
    write_statistics_json,
)

logger = logging.getLogger(__name__)

PREVIEW_FOLDER = "preview"
DICOM_SEG_SUFFIX = ".seg.dcm"
RTSTRUCT_SUFFIX = ".rtstruct.dcm"
STATISTICS_SUFFIX = ".json"
STATISTICS_CSV = "statistics.csv"
"""The batch's organ statistics, one row per case and organ, beside the cases' `<case>.json`."""


@dataclass(frozen=True)
class CaseResult:
    """One segmented case: the label on the CT's own grid and, where a writer of the run reads them
    (`CaseWriter.needs_ct`), the CT on its processing grid and the label there."""

    ct: CanonicalCT | None
    """None where no writer reads it: `predict` then frees it before the label is restored and written."""
    label_zyx: np.ndarray | None
    """uint8 on the canonical grid; None where the CT is."""
    label: sitk.Image
    """uint8 on the exact grid of the CT as read."""
    source: Path
    """The CT file or DICOM folder the case was read from."""
    notice: str | None = None
    """What a reader of the outputs must know about how they were made (demonstration models), or None."""

    @property
    def on_processing_grid(self) -> tuple[CanonicalCT, np.ndarray]:
        """The CT and its label on the processing grid, for a writer that `needs_ct`."""
        if self.ct is None or self.label_zyx is None:
            raise ValueError(f"{self.source}: the CT was not kept: no writer of the run declared that it needs it")
        return self.ct, self.label_zyx

    @cached_property
    def statistics(self) -> dict[str, OrganStatistics]:
        """Per-organ statistics on the grid as read, computed once for whichever writer asks first."""
        return organ_statistics(self.on_processing_grid[0].image_as_read, self.label)

    def cut_off_labels(self) -> list[int]:
        """The label values of the organs touching the scan's first or last slice (likely cut off)."""
        return [organ.label for organ in self.statistics.values() if organ.touches_scan_end]


@dataclass(frozen=True)
class DoneCase:
    """A case of the batch whose label is there (done by this run or an earlier one), for batch-level files."""

    case_id: str
    source: Path
    """Its CT file or DICOM folder."""
    label: Path
    """Its label's file."""


class CaseWriter:
    """One output of a case.

    Rules every writer keeps, which the batch relies on:
    - `write` is atomic (`atomic.atomic_output`): the output is complete or absent, also when the process dies;
    - the temporary names it writes through end with the output's image ending (`.nii.gz`) or last suffix (`.png`,
      `.dcm`, `.json`), so that `leftovers_of` finds what a killed run left;
    - it writes nothing for the case outside `path(...)`; batch-level files are written by `finish`.
    """

    name: str = ""
    """What the run report calls it (its seconds per case) and, for a companion, its `predict` flag."""
    needs_ct: bool = False
    """Whether it reads the CT (`CaseResult.on_processing_grid`, or `statistics`, which read it on its grid as read:
    an oblique CT then keeps that too). Without such a writer in the run, a case's CT is freed before its label is
    restored and written, the peak of a large CT."""

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        """Where this writer puts case `case_id`'s output inside the output folder (`source`: the case's CT)."""
        raise NotImplementedError

    def refusal(self, source: Path) -> str | None:
        """Why this output cannot be made for the CT at `source`, or None: the case's label then fails the case, a
        companion is left out for it (with a warning)."""
        return None

    def batch_refusal(self, sources: Sequence[Path]) -> str | None:
        """Why this output cannot be made for any of the batch's CTs, or None: the batch then stops before any work."""
        return None

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        """Write the output atomically; FileExistsError if `path` exists and `overwrite` is not set."""
        raise NotImplementedError

    def finish(self, output: Path, done: Sequence[DoneCase]) -> list[Path]:
        """Write the batch-level files of this output (after the batch, also a stopped one) from the cases that are
        done; the files written. InputError naming the file when one cannot be written, or is written without some
        case."""
        return []


class CaseOutput(CaseWriter):
    """The output of a case whose file marks it as done: its label."""

    def existing_problem(self, path: Path, source: Path) -> str | None:
        """Why the file already at `path` cannot count as the finished output of the CT at `source`, or None."""
        raise NotImplementedError

    def refuse_replacing(self, path: Path) -> None:
        """InputError unless the file at `path` (if any) may be replaced: one this writer could have written."""
        raise NotImplementedError


class ImageLabelWriter(CaseOutput):
    """The label map as one image file, `<case><suffix>` (uint8: 0 background, 1 liver, ..., 4 pancreas), in
    `label_format` or, by default, in the format of its CT where that keeps the CT's geometry exactly (see
    `label_suffix_for`)."""

    name = "write"

    def __init__(self, label_format: str | None = None) -> None:
        self.label_format = label_format
        """"nii.gz", "nii", "mha" or "nrrd"; None: by the CT's format."""

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        if self.label_format is not None:
            return output / f"{case_id}.{self.label_format}"
        return output / f"{case_id}{LABEL_SUFFIX if source is None else label_suffix_for(source)}"

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        write_label(result.label, path, overwrite=overwrite)  # read back whole before it took its name
        if self.label_format is not None and (problem := label_grid_problem(path, result.source)) is not None:
            path.unlink()  # a label off its CT's grid would be redone by every later run
            raise InputError(
                f"{path}: removed again: {problem} (a NIfTI header holds the origin in float32 and an orthonormal "
                "direction: leave --format out, or give mha or nrrd, for this CT)"
            )

    def existing_problem(self, path: Path, source: Path) -> str | None:
        return existing_label_problem(path, source)

    def refuse_replacing(self, path: Path) -> None:
        refuse_replacing_foreign_file(path)


class DicomSeriesOutput(CaseOutput):
    """An output that references the DICOM series the CT was read from, `<case><suffix>`: other inputs are refused.
    A file already there is replaced only if it is an output of the same kind, whole or damaged."""

    suffix: str = ""
    kind: str = ""
    """What the messages call it."""

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        return output / f"{case_id}{self.suffix}"

    def refusal(self, source: Path) -> str | None:
        if is_dicom_folder(source):
            return None
        return f"{source}: not a DICOM series; {self.kind} references the series it segments (DICOM folders only)"

    def batch_refusal(self, sources: Sequence[Path]) -> str | None:
        if any(source.is_dir() for source in sources):
            return None
        return f"no DICOM series among the inputs; {self.kind} references the series it segments"

    def refuse_replacing(self, path: Path) -> None:
        if path.exists() and path.stat().st_size > 0 and not self.is_own_kind(path):  # a damaged one is redone
            raise InputError(f"{path}: exists and is not {self.kind}; not replaced: move it away")

    def is_own_kind(self, path: Path) -> bool:
        """Whether the file at `path` declares itself an output of this kind (whole or damaged)."""
        raise NotImplementedError


class DicomSegWriter(DicomSeriesOutput):
    """The label as a DICOM-SEG, `<case>.seg.dcm`, over the DICOM series the CT was read from: four coded segments
    numbered by the organs' label values (see `dicom_seg.write_dicom_seg`)."""

    name = "dicom-seg"
    suffix = DICOM_SEG_SUFFIX
    kind = "a DICOM-SEG"
    help = (
        f"also write OUTPUT/<case>{DICOM_SEG_SUFFIX}, a DICOM Segmentation object over the input DICOM series (one "
        "coded segment per organ, numbered by its label value), which PACS and viewers open; other inputs get none, "
        "with a warning"
    )

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        from efficientscn.outputs.dicom_seg import write_dicom_seg  # highdicom and pydicom: only when asked

        write_dicom_seg(result.source, result.label, path, overwrite=overwrite)

    def existing_problem(self, path: Path, source: Path) -> str | None:
        from efficientscn.outputs.dicom_seg import dicom_seg_problem

        return dicom_seg_problem(path)

    def is_own_kind(self, path: Path) -> bool:
        from efficientscn.outputs.dicom_seg import is_dicom_seg_file

        return is_dicom_seg_file(path)


class RTStructWriter(DicomSeriesOutput):
    """The label as a DICOM RT Structure Set, `<case>.rtstruct.dcm`, over the DICOM series the CT was read from: one
    contoured ROI per organ found (see `rtstruct.write_rtstruct`; needs the `rtstruct` extra)."""

    name = "rtstruct"
    suffix = RTSTRUCT_SUFFIX
    kind = "an RT Structure Set"
    help = (
        f"also write OUTPUT/<case>{RTSTRUCT_SUFFIX}, a DICOM RT Structure Set over the input DICOM series (one "
        "contoured ROI per organ found, for radiotherapy planning systems; needs the rtstruct extra); other inputs "
        "get none, with a warning"
    )

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        from efficientscn.outputs.rtstruct import write_rtstruct  # rt-utils and pydicom: only when asked

        write_rtstruct(result.source, result.label, path, overwrite=overwrite)

    def existing_problem(self, path: Path, source: Path) -> str | None:
        from efficientscn.outputs.rtstruct import rtstruct_problem

        return rtstruct_problem(path)

    def is_own_kind(self, path: Path) -> bool:
        from efficientscn.outputs.rtstruct import is_rtstruct_file

        return is_rtstruct_file(path)


class StatisticsWriter(CaseWriter):
    """Per-organ statistics, `<case>.json` (see `statistics.organ_statistics`); the batch's `statistics.csv` is
    gathered from these files at the end of the run."""

    name = "statistics"
    needs_ct = True
    help = (
        f"also write OUTPUT/<case>{STATISTICS_SUFFIX} and OUTPUT/{STATISTICS_CSV}: per organ the voxels, volume "
        "(ml), mean, median, 5th and 95th percentile HU, bounding box (mm), connected components, and whether it "
        "touches the scan's first or last slice (likely cut off)"
    )

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        return output / f"{case_id}{STATISTICS_SUFFIX}"

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        write_statistics_json(path, result.statistics, overwrite=overwrite)

    def finish(self, output: Path, done: Sequence[DoneCase]) -> list[Path]:
        """`statistics.csv` from the `<case>.json` of every done case, from this run or an earlier; a done case
        whose JSON is missing or damaged gets it again, from its CT and its label."""
        csv_path, rows, left_out = output / STATISTICS_CSV, {}, []
        for case in done:
            try:
                rows[case.case_id] = self._statistics_of(case, self.path(output, case.case_id, case.source))
            except (InputError, OSError) as error:
                left_out.append(f"{case.source.name}: {error}")
        if rows:
            try:
                write_statistics_csv(csv_path, rows)
            except OSError as error:
                raise InputError(f"{csv_path}: not written: {error.strerror or error}") from error
        if left_out:
            raise InputError(f"{csv_path}: {len(left_out)} done case(s) left out: {'; '.join(left_out)}")
        return [csv_path] if rows else []

    @staticmethod
    def _statistics_of(case: DoneCase, path: Path) -> dict[str, OrganStatistics]:
        """The case's statistics from its JSON or, where that is missing or damaged, made again and written."""
        if path.exists():
            try:
                return read_statistics_json(path)
            except InputError as error:
                logger.warning("%s: making its statistics again: %s", case.source.name, error)
        statistics = organ_statistics(read_ct(case.source), read_label(case.label))
        write_statistics_json(path, statistics, overwrite=True)
        logger.info("%s: wrote %s, from its CT and its label", case.source.name, path.name)
        return statistics


class PreviewWriter(CaseWriter):
    """A quick-look PNG, `preview/<case>.png`, of the case's label (it replaces an older one, of an earlier
    attempt or run); organs touching the scan's first or last slice (likely cut off) are hatched."""

    name = "preview"
    needs_ct = True
    help = f"also write OUTPUT/{PREVIEW_FOLDER}/<case>.png (organs likely cut off by the scan are hatched)"

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        return output / PREVIEW_FOLDER / f"{case_id}.png"

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        ct, label_zyx = result.on_processing_grid
        write_preview(
            ct.array_zyx,
            label_zyx,
            ct.spacing_zyx,
            path,
            overwrite=True,
            hatched=result.cut_off_labels(),
            notice=result.notice,
        )


LABEL_FORMATS: dict[str, Callable[[], CaseOutput]] = {
    **{
        image_format: lambda image_format=image_format: ImageLabelWriter(image_format)
        for image_format in ("nii.gz", "nii", "mha", "nrrd")
    },
    "dicom-seg": DicomSegWriter,
    "rtstruct": RTStructWriter,
}
"""What `--format` takes: the label map's file format, or a DICOM output instead of a label map."""

COMPANIONS: dict[str, type[CaseWriter]] = {
    writer.name: writer for writer in (DicomSegWriter, RTStructWriter, StatisticsWriter, PreviewWriter)
}
"""The outputs `predict` writes beside the label when asked, by name (its flag: `--<name>`; its help: the class's
`help`), in the order they are written."""


@dataclass(frozen=True)
class Written:
    """What one writer did for a case: wrote `path` in `seconds`, or nothing, for the `refusal`."""

    name: str
    path: Path | None
    seconds: float = 0.0
    refusal: str | None = None


def write_case(
    result: CaseResult, writers: Sequence[CaseWriter], output: Path, case_id: str, *, overwrite: bool
) -> Iterator[Written]:
    """Write the case's outputs, yielding each writer's work as it ends; the last writer is the case's label, whose
    file marks the case as done, so it comes once every other output is there.

    A companion replaces its own earlier file (of an attempt that did not finish the case), never a foreign one: a
    companion that can judge files (a DICOM-SEG or RT Structure Set beside the label) refuses a file at its path it
    could not have written. The label replaces an existing file only with `overwrite`. A writer that does not apply
    to this CT yields its refusal and writes nothing.
    """
    label = writers[-1]
    for writer in writers:
        if (refusal := writer.refusal(result.source)) is not None:
            yield Written(writer.name, None, refusal=refusal)
            continue
        path = writer.path(output, case_id, result.source)
        if writer is not label and isinstance(writer, CaseOutput):
            writer.refuse_replacing(path)
        start = time.perf_counter()
        writer.write(result, path, overwrite=overwrite if writer is label else True)
        yield Written(writer.name, path, time.perf_counter() - start)


def leftovers_of(path: Path) -> list[Path]:
    """The temporary files an interrupted write of a writer's output at `path` left: each writer keeps the image
    ending (`.nii.gz`) or the last suffix (`.png`, `.dcm`, `.json`) at the end of its temporary names."""
    return leftover_temporaries(path, image_suffix(path) or path.suffix)


def case_output(label_format: str | None = None) -> CaseOutput:
    """The case's label, whose file marks it as done: the label map in `label_format`, or a DICOM output."""
    return ImageLabelWriter() if label_format is None else LABEL_FORMATS[label_format]()


def companion_writers(names: Sequence[str], label: CaseOutput) -> list[CaseWriter]:
    """The writers of the companions `names` (keys of `COMPANIONS`) beside `label`, in the order they write; one
    that `label` already is (a DICOM-SEG or RT Structure Set asked for as both) is left out."""
    unknown = sorted(set(names) - set(COMPANIONS))
    if unknown:
        raise ValueError(f"unknown output(s) {unknown}; known: {sorted(COMPANIONS)}")
    return [COMPANIONS[name]() for name in COMPANIONS if name in names and name != label.name]
