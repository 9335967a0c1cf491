"""Train, export and evaluate the demonstration models shipped in `submitted_saved_models/`, in one command.

    python recipes/shipped_models.py [--work /tmp/shipped] [--output submitted_saved_models] [--overwrite]

1. Builds a FLARE-layout dataset from the labelled real CTs of ../shared/data (two patients: ts_example_ct with
   its upper-abdomen slab ts_example_ct_sm, and ts_example_ct_dicom; plus their re-gridded LPI, ASL, oblique and
   thick-slice copies), nine training cases `train_000`..`train_008` with FLARE label files.
2. Runs the project's own workflow scripts on it: `preprocessing/preprocessing.py`, `localization/main.py` and
   `scn/main.py` for cv 0 with the settings in `recipes/*.json` (the paper's networks unchanged; more learning
   rate, a shorter weight average and milder augmentation for a few hundred iterations on nine cases, and for the
   SCN the 10 mm box margin that inference uses instead of 32 mm, which also makes its samples smaller), then
   `main_create_model.py` of both and `inference/inference_tf_utils_module.py` into the output folder.
3. Segments the training cases with `efficientscn predict` from the output folder, scores them with
   `efficientscn evaluate`, and writes the model card (`README.md` of the output folder) with the figures.

Everything is seeded; the runs go to `<work>/runs`, with a checkpoint every quarter of the iterations (to
score how the models got there). The output folder is replaced only with `--overwrite`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from efficientscn.model.savedmodel import DEMONSTRATION, update_metadata
from efficientscn.versions import versions

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EFFICIENTSCN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RECIPES = Path(__file__).resolve().parent

TRAINING_CASES = (
    "ts_example_ct",
    "ts_example_ct_sm",
    "ts_example_ct_dicom",
    "ts_example_ct_sm_lpi",
    "ts_example_ct_sm_asl",
    "ts_example_ct_sm_oblique",
    "ts_example_ct_sm_aniso",
    "ts_example_ct_dicom_oblique",
    "ts_example_ct_dicom_aniso",
)
"""The shared cases with FLARE labels of all organs they contain (dcmqi_ct3slice, 3 slices with a rough liver
outline, is left out)."""

ITERATIONS = {"localization": 400, "segmentation": 480}
"""Iterations per stage, to fill the hour the recipe is allowed on a 2-core CPU in bfloat16: with the original's
generalized Dice the large organs learn more slowly than with the earlier loss (400 SCN iterations, 50 minutes in
all, reached a mean kidney Dice of 0.68), so the SCN gets the minutes left."""

RECORD_NAME = "training_record.json"

PREVIOUS_RELEASE = {
    "liver": {"dice": 0.9428, "nsd": 0.7199},
    "kidney": {"dice": 0.9102, "nsd": 0.7896},
    "spleen": {"dice": 0.9351, "nsd": 0.7592},
    "pancreas": {"dice": 0.4720, "nsd": 0.4556},
}
"""The mean scores of the previous release's model card on the same cases, for this card's comparison."""

logger = logging.getLogger("recipe")


def build_dataset(root: Path) -> dict[str, str]:
    """TrainingImg/train_XXX_0000.nii.gz and TrainingMask/train_XXX.nii.gz from the shared cases; ID -> source."""
    from efficientscn.imaging.read import read_ct, read_label
    from efficientscn.imaging.write import write_image_atomic, write_label

    cases = {case["id"]: case for case in json.loads((SHARED_DATA / "cases.json").read_text())}
    sources = {}
    for index, case_id in enumerate(TRAINING_CASES):
        train_id = f"train_{index:03d}"
        case = cases[case_id]
        write_image_atomic(read_ct(SHARED_DATA / case["image"]), root / "TrainingImg" / f"{train_id}_0000.nii.gz")
        write_label(read_label(SHARED_DATA / case["flare_label"]), root / "TrainingMask" / f"{train_id}.nii.gz")
        sources[train_id] = case_id
    return sources


def run(command: list[str | Path]) -> float:
    """Run a workflow step (a script of this repository) with this Python; its duration in seconds."""
    command = [str(part) for part in command]
    logger.info("$ %s", " ".join(command))
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    return time.perf_counter() - start


def latest_run(runs: Path, stage: str) -> Path:
    """The newest run folder of a stage's fold 0."""
    return sorted((runs / stage / "cv0").iterdir())[-1]


def machine() -> str:
    """CPU model and core count, for the model card."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({model}), no GPU"


def _settings_text(path: Path) -> str:
    """The settings of a recipe JSON file as `a.b value` pairs, for the model card."""

    def flat(record: dict, prefix: str = "") -> list[str]:
        return [
            item
            for key, value in record.items()
            for item in (flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"`{prefix}{key}` {value:g}"])
        ]

    return ", ".join(flat(json.loads(path.read_text(encoding="utf-8"))))


def write_model_card(output: Path) -> Path:
    """The model card `README.md` of the output folder, from the template and the run's record (its figures)."""
    record = json.loads((output / RECORD_NAME).read_text(encoding="utf-8"))
    evaluation = record["evaluation"]
    table = "\n".join(
        f"| {organ} | {scores['dice']:.4f} | {scores['nsd']:.4f} |" for organ, scores in evaluation["mean"].items()
    )
    comparison = "\n".join(
        [
            "| organ | Dice, previous release | Dice, these models | NSD, previous release | NSD, these models |",
            "|---|---|---|---|---|",
            *(
                f"| {organ} | {PREVIOUS_RELEASE[organ]['dice']:.4f} | {scores['dice']:.4f} "
                f"| {PREVIOUS_RELEASE[organ]['nsd']:.4f} | {scores['nsd']:.4f} |"
                for organ, scores in evaluation["mean"].items()
            ),
        ]
    )
    cases = "\n".join(f"| {train_id} | {case_id} |" for train_id, case_id in record["sources"].items())
    minutes = {stage: f"{seconds / 60:.0f}" for stage, seconds in record["training_seconds"].items()}
    text = (
        (RECIPES / "model_card.md")
        .read_text(encoding="utf-8")
        .format(
            cases=cases,
            table=table,
            comparison=comparison,
            scored=evaluation["cases"],
            machine=record["machine"],
            localization_iterations=record["iterations"]["localization"],
            segmentation_iterations=record["iterations"]["segmentation"],
            localization_minutes=minutes["localization"],
            segmentation_minutes=minutes["segmentation"],
            total_minutes=f"{sum(record['training_seconds'].values()) / 60:.1f}",
            localization_settings=_settings_text(RECIPES / "localization.json"),
            segmentation_settings=_settings_text(RECIPES / "segmentation.json"),
            versions=", ".join(f"{name} {version}" for name, version in record.get("versions", {}).items()),
        )
    )
    card = output / "README.md"
    card.write_text(text, encoding="utf-8")
    logger.info("wrote %s", card)
    return card


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/efficientscn-shipped"), help="dataset and runs")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "submitted_saved_models")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder's models and card")
    parser.add_argument(
        "--card-only", action="store_true", help=f"only rewrite the model card from the output folder's {RECORD_NAME}"
    )
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="only segment and score the training cases of an earlier run's work folder again with the output "
        "folder's models, and rewrite the record's evaluation and the model card",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.card_only:
        write_model_card(args.output)
        return 0
    if args.evaluate_only:
        evaluate_models(args.output, args.work)
        return 0
    existing = [name for name in ("localization", "segmentation", "tf_utils_module") if (args.output / name).exists()]
    if existing and not args.overwrite:  # found now, not by the export an hour of training later
        parser.error(f"{args.output} already holds {', '.join(existing)}: --overwrite replaces them, or pick --output")
    python = sys.executable
    marker = args.work / ".efficientscn-recipe"
    if args.work.exists() and any(args.work.iterdir()):
        if not marker.is_file():
            parser.error(f"{args.work} is not empty and not an earlier work folder of this recipe; choose another")
        shutil.rmtree(args.work)  # an earlier run of this recipe: start afresh
    args.work.mkdir(parents=True, exist_ok=True)
    marker.touch()
    dataset, runs = args.work / "dataset", args.work / "runs"
    sources = build_dataset(dataset)
    run([python, "preprocessing/preprocessing.py", "--dataset", dataset, "-q"])

    seconds = {}
    for stage, script_folder in (("localization", "localization"), ("segmentation", "scn")):
        iterations = ITERATIONS[stage]
        seconds[stage] = run(
            [python, f"{script_folder}/main.py", "--dataset", dataset, "--output", runs, "--cv", "0",
             "--max-iter", iterations, "--snapshot-iter", iterations // 4, "--test-iter", iterations, "--log-iter", 20,
             "--precision", "bfloat16", "--workers", 1, "--seed", 0, "--config", RECIPES / f"{stage}.json", "-q"]
        )  # fmt: skip
    overwrite = ["--overwrite"] if args.overwrite else []
    for stage, script_folder in (("localization", "localization"), ("segmentation", "scn")):
        run(
            [python, f"{script_folder}/main_create_model.py", "--run", latest_run(runs, stage), "--iter",
             ITERATIONS[stage], "--output", args.output / stage, *overwrite]
        )  # fmt: skip
    run([python, "inference/inference_tf_utils_module.py", "--output", args.output / "tf_utils_module", *overwrite])
    for stage in ("localization", "segmentation"):  # inference warns of them, from their own metadata
        update_metadata(args.output / stage, {DEMONSTRATION: DEMONSTRATION_NOTE})

    record = {
        "sources": sources,
        "iterations": ITERATIONS,
        "training_seconds": {stage: round(value) for stage, value in seconds.items()},
        "machine": machine(),
        "versions": versions(),
    }
    (args.output / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    evaluate_models(args.output, args.work)
    return 0


DEMONSTRATION_NOTE = (
    "a demonstration model, trained on two patients (9 CTs of this project's test data, whose labels are model "
    "predictions): for trying the tool, not for research results or patient care"
)


def evaluate_models(output: Path, work: Path) -> None:
    """Segment the work folder's training cases with the models in `output`, score them with `efficientscn
    evaluate`, add the scores to the output's record and write the model card."""
    dataset, predictions = work / "dataset", work / "predictions"
    efficientscn = Path(sys.executable).with_name("efficientscn")
    run([efficientscn, "predict", "-q", "-i", dataset / "TrainingImg", "-o", predictions, "--models", output,
         "--overwrite"])  # fmt: skip
    run([efficientscn, "evaluate", "--pred", predictions, "--ref", dataset / "TrainingMask", "--overwrite"])
    record_path = output / RECORD_NAME
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record["evaluation"] = json.loads((predictions / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    write_model_card(output)


if __name__ == "__main__":
    sys.exit(main())
