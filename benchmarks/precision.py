"""bfloat16 against float32 on a CPU: per-organ Dice and NSD of both, and the seconds per case of each.

    python benchmarks/precision.py [--models submitted_saved_models] [--cases ID ...]

Segments the labelled real CTs of ../shared/data with `efficientscn predict --precision float32` and
`--precision bfloat16`, scores both with the FLARE21 metrics, and prints the per-organ means and their
difference. The project uses bfloat16 on CPUs that have it because this difference stays below 0.005 Dice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PRECISIONS = ("float32", "bfloat16")


def link_cases(folder: Path, case_ids: list[str]) -> Path:
    """A folder of links `<id>_0000.nii.gz` (or `<id>` for a DICOM folder) to the shared CTs, and one of labels."""
    cases = {case["id"]: case for case in json.loads((SHARED_DATA / "cases.json").read_text())}
    (folder / "ct").mkdir(parents=True)
    (folder / "labels").mkdir()
    for case_id in case_ids:
        image = SHARED_DATA / cases[case_id]["image"]
        (folder / "ct" / (case_id if image.is_dir() else f"{case_id}_0000.nii.gz")).symlink_to(image)
        (folder / "labels" / f"{case_id}.nii.gz").symlink_to(SHARED_DATA / cases[case_id]["flare_label"])
    return folder


def score(folder: Path, models: Path, precision: str) -> tuple[dict, float]:
    """Mean Dice and NSD per organ of one precision, and the median seconds per case (segmentation stages)."""
    efficientscn = str(Path(sys.executable).with_name("efficientscn"))
    output, report = folder / precision, folder / f"{precision}.json"
    subprocess.run(
        [efficientscn, "predict", "-q", "-i", str(folder / "ct"), "-o", str(output), "--models", str(models),
         "--precision", precision, "--device", "cpu", "--report", str(report)],
        check=True,
    )  # fmt: skip
    subprocess.run([efficientscn, "evaluate", "-q", "--pred", str(output), "--ref", str(folder / "labels")], check=True)
    cases = json.loads(report.read_text())["cases"]
    seconds = sorted(case["seconds"]["localization"] + case["seconds"]["segmentation"] for case in cases)
    return json.loads((output / "evaluation" / "summary.json").read_text()), seconds[len(seconds) // 2]


def organ_means(summary: dict) -> dict[str, dict[str, float]]:
    """{organ: {"dice": mean, "nsd": mean}} from an evaluation summary."""
    return {organ: {"dice": values["dice"], "nsd": values["nsd"]} for organ, values in summary["mean"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "submitted_saved_models")
    parser.add_argument("--cases", nargs="*", help="shared case IDs (default: all with labels of several organs)")
    args = parser.parse_args()
    case_ids = args.cases or [
        case["id"] for case in json.loads((SHARED_DATA / "cases.json").read_text()) if case["id"] != "dcmqi_ct3slice"
    ]
    with tempfile.TemporaryDirectory(prefix="efficientscn-precision-") as temporary:
        folder = link_cases(Path(temporary), case_ids)
        results = {precision: score(folder, args.models, precision) for precision in PRECISIONS}
    means = {precision: organ_means(summary) for precision, (summary, _) in results.items()}
    print(f"{len(case_ids)} cases; mean per organ (float32 | bfloat16 | difference)")
    print("organ | Dice float32 | Dice bfloat16 | Dice difference | NSD float32 | NSD bfloat16")
    for organ, f32 in means["float32"].items():
        b16 = means["bfloat16"][organ]
        print(
            f"{organ} | {f32['dice']:.4f} | {b16['dice']:.4f} | {b16['dice'] - f32['dice']:+.4f} | "
            f"{f32['nsd']:.4f} | {b16['nsd']:.4f}"
        )
    print("median seconds per case (localization + segmentation): " + ", ".join(
        f"{precision} {seconds:.2f}" for precision, (_, seconds) in results.items()
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
