"""What `predict` writes for a case, behind one small interface: the seam new output formats plug into.

A `LabelWriter` names its output for a case and writes it from the `CaseResult`. One of a run's writers is the
case's label (a label map, or a DICOM-SEG with `--format dicom-seg`), whose presence marks a case as done, so it
writes last and also judges an existing file (`CaseOutput`); the others are its companions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from efficientscn.atomic import leftover_temporaries
from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.names import LABEL_SUFFIX, image_suffix, label_suffix_for
from efficientscn.imaging.read import is_dicom_folder
from efficientscn.imaging.write import write_label
from efficientscn.infer.cases import existing_label_problem, label_grid_problem, refuse_replacing_foreign_file
from efficientscn.infer.preview import write_preview
from efficientscn.infer.statistics import OrganStatistics, organ_statistics, write_statistics_json

PREVIEW_FOLDER = "preview"
LABEL_FORMATS = ("nii.gz", "nii", "mha", "nrrd", "dicom-seg")
"""What `--format` takes: the label map's file format, or a DICOM-SEG instead of a label map."""
DICOM_SEG_SUFFIX = ".seg.dcm"
STATISTICS_SUFFIX = ".json"


@dataclass(frozen=True)
class CaseResult:
    """One segmented case: the CT on its processing grid, the label there and on the CT's own grid."""

    ct: CanonicalCT
    label_zyx: np.ndarray
    """uint8 on the canonical grid."""
    label: sitk.Image
    """uint8 on the exact grid of the CT as read."""
    source: Path
    """The CT file or DICOM folder the case was read from."""

    @cached_property
    def statistics(self) -> dict[str, OrganStatistics]:
        """Per-organ statistics on the grid as read, computed once for whichever writer asks first."""
        return organ_statistics(self.ct.image_as_read, self.label)

    def cut_off_labels(self) -> list[int]:
        """The label values of the organs touching the scan's first or last slice (likely cut off)."""
        return [organ.label for organ in self.statistics.values() if organ.touches_scan_end]


class LabelWriter(Protocol):
    """One output of a case."""

    name: str
    """What the run report calls it (its seconds per case)."""

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        """Where this writer puts case `case_id`'s output inside the output folder (`source`: the case's CT)."""

    def refusal(self, source: Path) -> str | None:
        """Why this output cannot be made for the CT at `source`, or None: the case's label then fails the case, a
        companion is left out for it (with a warning)."""

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        """Write the output atomically; FileExistsError if `path` exists and `overwrite` is not set."""


class CaseOutput(LabelWriter, Protocol):
    """The first output of a case, whose file marks it as done."""

    def existing_problem(self, path: Path, source: Path) -> str | None:
        """Why the file already at `path` cannot count as the finished output of the CT at `source`, or None."""

    def refuse_replacing(self, path: Path) -> None:
        """InputError unless the file at `path` (if any) may be replaced: one this writer could have written."""


@dataclass(frozen=True)
class ImageLabelWriter:
    """The label map as one image file, `<case><suffix>` (uint8: 0 background, 1 liver, ..., 4 pancreas), in
    `label_format` or, by default, in the format of its CT where that keeps the CT's geometry exactly (see
    `label_suffix_for`)."""

    label_format: str | None = None
    """"nii.gz", "nii", "mha" or "nrrd"; None: by the CT's format."""
    name: str = "write"

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        if self.label_format is not None:
            return output / f"{case_id}.{self.label_format}"
        return output / f"{case_id}{LABEL_SUFFIX if source is None else label_suffix_for(source)}"

    def refusal(self, source: Path) -> str | None:
        return None

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


@dataclass(frozen=True)
class DicomSegWriter:
    """The label as a DICOM-SEG, `<case>.seg.dcm`, over the DICOM series the CT was read from: one coded segment
    per organ found (see `dicom_seg.write_dicom_seg`). Other inputs are refused: a SEG references its series."""

    name: str = "dicom-seg"

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        return output / f"{case_id}{DICOM_SEG_SUFFIX}"

    def refusal(self, source: Path) -> str | None:
        if is_dicom_folder(source):
            return None
        return f"{source}: not a DICOM series; a DICOM-SEG references the series it segments (DICOM folders only)"

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        from efficientscn.infer.dicom_seg import write_dicom_seg  # highdicom and pydicom: only when asked

        write_dicom_seg(result.source, result.label, path, overwrite=overwrite)

    def existing_problem(self, path: Path, source: Path) -> str | None:
        from efficientscn.infer.dicom_seg import dicom_seg_problem

        return dicom_seg_problem(path)

    def refuse_replacing(self, path: Path) -> None:
        from efficientscn.infer.dicom_seg import is_dicom_seg_file

        if path.exists() and path.stat().st_size > 0 and not is_dicom_seg_file(path):  # a damaged SEG is redone
            raise InputError(f"{path}: exists and is not a DICOM-SEG; not replaced: move it away")


@dataclass(frozen=True)
class StatisticsWriter:
    """Per-organ statistics, `<case>.json` (see `statistics.organ_statistics`); the batch's `statistics.csv` is
    gathered from these files at the end of the run."""

    name: str = "statistics"

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        return output / f"{case_id}{STATISTICS_SUFFIX}"

    def refusal(self, source: Path) -> str | None:
        return None

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        write_statistics_json(path, result.statistics, overwrite=overwrite)


@dataclass(frozen=True)
class PreviewWriter:
    """A quick-look PNG, `preview/<case>.png`, of the case's label (it replaces an older one, of an earlier
    attempt or run); organs touching the scan's first or last slice (likely cut off) are hatched."""

    name: str = "preview"

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        return output / PREVIEW_FOLDER / f"{case_id}.png"

    def refusal(self, source: Path) -> str | None:
        return None

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        write_preview(
            result.ct.array_zyx,
            result.label_zyx,
            result.ct.spacing_zyx,
            path,
            overwrite=True,
            hatched=result.cut_off_labels(),
        )


def leftovers_of(path: Path) -> list[Path]:
    """The temporary files an interrupted write of a writer's output at `path` left: each writer keeps the image
    ending (`.nii.gz`) or the last suffix (`.png`, `.dcm`, `.json`) at the end of its temporary names."""
    return leftover_temporaries(path, image_suffix(path) or path.suffix)


def case_output(label_format: str | None = None) -> CaseOutput:
    """The case's label, whose file marks it as done: the label map in `label_format`, or a DICOM-SEG."""
    return DicomSegWriter() if label_format == "dicom-seg" else ImageLabelWriter(label_format)


def companion_writers(
    label_format: str | None = None, *, dicom_seg: bool = False, statistics: bool = False, preview: bool = False
) -> list[LabelWriter]:
    """What is written beside the case's label (before it, which marks the case as done), as asked: a DICOM-SEG
    beside the label map, the statistics, the preview."""
    return [
        *([DicomSegWriter()] if dicom_seg and label_format != "dicom-seg" else []),
        *([StatisticsWriter()] if statistics else []),
        *([PreviewWriter()] if preview else []),
    ]
