"""Evaluate a folder of predicted label maps against reference labels: per-case CSV and a per-organ summary.

Files pair by case ID (`efficientscn.imaging.names.case_id`: `train_000.nii.gz` and `train_000_0000.nii.gz` are both
`train_000`), after the suffixes the user names are stripped (`patient01_ct` and `patient01_flare` pair with
`_ct` and `_flare` stripped). Each pair must lie on the same grid; the reference's spacing is used for the surface
distances.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
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


def paired_id(path: Path, strip_suffixes: Sequence[str] = ()) -> str:
    """The ID a label file pairs by: its case ID without the first of `strip_suffixes` it ends with."""
    case = case_id(path)
    for suffix in strip_suffixes:
        if suffix and case.endswith(suffix) and len(case) > len(suffix):
            return case[: -len(suffix)]
    return case


def label_files(folder: str | Path, strip_suffixes: Sequence[str] = ()) -> dict[str, Path]:
    """Label files in a folder by the ID they pair by (image files only, hidden files ignored; see `paired_id`);
    duplicate IDs are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and image_suffix(path) and not path.name.startswith("."):
            case = paired_id(path, strip_suffixes)
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
            "not_in_reference": self.absent(),
            "failed": dict(sorted(self.report.failed.items())),
            "unpaired_predictions": self.unpaired_predictions,
        }

    def absent(self) -> dict[str, dict[str, int]]:
        """Per organ, the scored cases whose reference lacks it: how many, and how many of them the prediction has
        it in (scored 0 by the challenge's rule) or not (scored 1)."""
        counts = {}
        for organ in ORGAN_NAMES.values():
            lacking = [scores[organ] for scores in self.scores.values() if not scores[organ].in_reference]
            predicted = sum(score.in_prediction for score in lacking)
            counts[organ] = {"cases": len(lacking), "scored_1": len(lacking) - predicted, "scored_0": predicted}
        return counts

    def table(self) -> str:
        """The per-organ means as a small text table, as printed by `efficientscn evaluate`, with the cases whose
        reference lacks the organ: their scores are the challenge's rule, not a measurement."""
        mean, absent = self.mean(), self.absent()
        lines = [f"{'organ':<10}{'Dice':>8}{'NSD':>8}   not in the reference (NSD at {self.tolerance_mm:g} mm)"]
        for organ in ORGAN_NAMES.values():
            scores = "-".rjust(8) * 2 if mean is None else f"{mean[organ]['dice']:>8.4f}{mean[organ]['nsd']:>8.4f}"
            count = absent[organ]
            rule = f": {count['scored_1']} scored 1, {count['scored_0']} scored 0" if count["cases"] else ""
            lines.append(f"{organ:<10}{scores}   {count['cases']} of {len(self.scores)}{rule}")
        if any(count["cases"] for count in absent.values()):
            lines.append(
                "An organ a reference lacks scores 1 where the prediction has none either, 0 where it has some "
                "(FLARE21's rule); the means include these cases."
            )
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
    strip_suffixes: Sequence[str] = (),
) -> Evaluation:
    """Score every reference case against the prediction with the same ID (see `paired_id`).

    The files that pair with nothing are named in the log before any score. A reference case without a prediction,
    an unreadable file or a grid mismatch fails that case only; the others are scored. Predictions without a
    reference are listed and otherwise ignored.
    """
    references = label_files(reference_dir, strip_suffixes)
    predictions = label_files(prediction_dir, strip_suffixes)
    evaluation = Evaluation(tolerance_mm=tolerance_mm)
    evaluation.unpaired_predictions = sorted(set(predictions) - set(references))
    _warn_of_unpaired(references, predictions, strip_suffixes)

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


def _warn_of_unpaired(references: dict[str, Path], predictions: dict[str, Path], strip: Sequence[str]) -> None:
    """Name the files that pair with nothing, and say how names are paired."""
    without_prediction = [references[case].name for case in sorted(set(references) - set(predictions))]
    without_reference = [predictions[case].name for case in sorted(set(predictions) - set(references))]
    if not (without_prediction or without_reference):
        return
    how = f"suffixes stripped: {', '.join(strip)}" if strip else "--strip-suffix maps other names, e.g. _ct, _flare"
    for what, names in (("reference(s) without a prediction (failed)", without_prediction),
                        ("prediction(s) without a reference (ignored)", without_reference)):  # fmt: skip
        if names:
            logger.warning("%d %s: %s (files pair by case ID; %s)", len(names), what, ", ".join(names), how)


def write_evaluation(evaluation: Evaluation, output_dir: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write `metrics.csv` and `summary.json` atomically into `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    csv_path = write_text_atomic(output_dir / CSV_NAME, evaluation.csv_text(), overwrite=overwrite)
    summary_text = json.dumps(evaluation.summary(), indent=2) + "\n"
    json_path = write_text_atomic(output_dir / SUMMARY_NAME, summary_text, overwrite=overwrite)
    return csv_path, json_path
