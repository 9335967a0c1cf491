"""Evaluate a folder of predicted label maps against reference labels: per-case CSV and a per-organ summary.

Files pair by case ID (`efficientscn.imaging.names.case_id`: `train_000.nii.gz` and `train_000_0000.nii.gz` are both
`train_000`). Each pair must lie on the same grid; the reference's spacing is used for the surface distances.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.atomic import write_text_atomic
from efficientscn.batch import BatchReport, run_batch
from efficientscn.errors import InputError
from efficientscn.imaging.names import case_id, image_suffix
from efficientscn.imaging.read import read_label, require_same_grid
from efficientscn.labels import ORGAN_NAMES
from efficientscn.metrics import FLARE21_NSD_TOLERANCE_MM, OrganScore, flare_scores
from efficientscn.stopping import stop_on_signals

logger = logging.getLogger(__name__)

METRICS = ("dice", "nsd")
CSV_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"


def label_files(folder: str | Path) -> dict[str, Path]:
    """Label files in a folder by case ID (image files only, hidden files ignored); duplicate IDs are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and image_suffix(path) and not path.name.startswith("."):
            case = case_id(path)
            if case in found:
                raise InputError(f"{folder}: two files for case {case}: {found[case].name} and {path.name}")
            found[case] = path
    if not found:
        raise InputError(f"{folder}: no label files (.nii.gz, .nii, .mha, .nrrd) in this folder")
    return found


def evaluate_case(
    prediction_path: Path, reference_path: Path, tolerance_mm: float = FLARE21_NSD_TOLERANCE_MM
) -> dict[str, OrganScore]:
    """FLARE21 scores of one predicted label file against its reference; both must share one grid."""
    reference = read_label(reference_path)
    prediction = read_label(prediction_path)
    require_same_grid(prediction, prediction_path, reference, f"the reference {reference_path}")
    return flare_scores(
        sitk.GetArrayViewFromImage(prediction),
        sitk.GetArrayViewFromImage(reference),
        spacing_zyx=reference.GetSpacing()[::-1],
        tolerance_mm=tolerance_mm,
    )


@dataclass
class Evaluation:
    """Scores per case and organ, plus what could not be scored."""

    tolerance_mm: float
    scores: dict[str, dict[str, OrganScore]] = field(default_factory=dict)
    report: BatchReport = field(default_factory=BatchReport)
    unpaired_predictions: list[str] = field(default_factory=list)

    def mean(self) -> dict[str, dict[str, float]] | None:
        """Mean Dice and NSD per organ over the scored cases; None if no case was scored."""
        if not self.scores:
            return None
        return {
            organ: {m: float(np.mean([getattr(s[organ], m) for s in self.scores.values()])) for m in METRICS}
            for organ in ORGAN_NAMES.values()
        }

    def csv_text(self) -> str:
        """One row per scored case: case_id, then <organ>_dice and <organ>_nsd for every organ."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["case_id", *(f"{o}_{m}" for o in ORGAN_NAMES.values() for m in METRICS)])
        for case, organs in sorted(self.scores.items()):
            writer.writerow([case, *(f"{getattr(organs[o], m):.6f}" for o in ORGAN_NAMES.values() for m in METRICS)])
        return out.getvalue()

    def summary(self) -> dict:
        """The JSON summary: tolerance, reference and scored case counts, mean per organ over the scored cases,
        failed cases with their reasons, predictions without a reference."""
        return {
            "tolerance_mm": self.tolerance_mm,
            "reference_cases": len(self.scores) + len(self.report.failed),
            "cases": len(self.scores),
            "mean": self.mean(),
            "failed": dict(sorted(self.report.failed.items())),
            "unpaired_predictions": self.unpaired_predictions,
        }

    def table(self) -> str:
        """The per-organ means as a small text table, as printed by `efficientscn evaluate`."""
        mean = self.mean()
        lines = [f"{'organ':<10}{'Dice':>8}{'NSD':>8}   (NSD at {self.tolerance_mm:g} mm)"]
        for organ in ORGAN_NAMES.values():
            if mean is None:
                lines.append(f"{organ:<10}{'-':>8}{'-':>8}")
            else:
                lines.append(f"{organ:<10}{mean[organ]['dice']:>8.4f}{mean[organ]['nsd']:>8.4f}")
        lines.append(self.coverage())
        return "\n".join(lines)

    def coverage(self) -> str:
        """How many reference cases the means cover, and how many failed."""
        total = len(self.scores) + len(self.report.failed)
        failed = (
            f"; {len(self.report.failed)} failed and left out: {', '.join(self.report.failed)}"
            if self.report.failed
            else ""
        )
        return f"{len(self.scores)} of {total} reference cases scored{failed}"


def evaluate_folders(
    prediction_dir: str | Path,
    reference_dir: str | Path,
    tolerance_mm: float = FLARE21_NSD_TOLERANCE_MM,
    progress: bool = True,
) -> Evaluation:
    """Score every reference case against the prediction with the same case ID.

    A reference case without a prediction, an unreadable file or a grid mismatch fails that case only; the
    others are scored. Predictions without a reference are listed and otherwise ignored.
    """
    references = label_files(reference_dir)
    predictions = label_files(prediction_dir)
    evaluation = Evaluation(tolerance_mm=tolerance_mm)
    evaluation.unpaired_predictions = sorted(set(predictions) - set(references))
    if evaluation.unpaired_predictions:
        logger.warning("%d prediction(s) without a reference, ignored", len(evaluation.unpaired_predictions))

    def score(case: str) -> str:
        if case not in predictions:
            raise InputError(f"{references[case]}: no prediction for case {case} in {prediction_dir}")
        evaluation.scores[case] = evaluate_case(predictions[case], references[case], tolerance_mm)
        return "done"

    with stop_on_signals() as stop:
        evaluation.report = run_batch(
            sorted(references), score, name_of=str, description="evaluate", progress=progress, stop=stop
        )
    return evaluation


def write_evaluation(evaluation: Evaluation, output_dir: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write `metrics.csv` and `summary.json` atomically into `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    csv_path = write_text_atomic(output_dir / CSV_NAME, evaluation.csv_text(), overwrite=overwrite)
    summary_text = json.dumps(evaluation.summary(), indent=2) + "\n"
    json_path = write_text_atomic(output_dir / SUMMARY_NAME, summary_text, overwrite=overwrite)
    return csv_path, json_path
