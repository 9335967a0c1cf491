"""The original's released localization model, imported vs run through its own graph, beside our own models.

One `efficientscn predict` batch over the shared CTs (their sizes differ, as in a user's folder) for each way:

- ours: the shipped models, rebuilt in the device's precision;
- imported: the original's localization model (models folder in the original's format), imported by predict into
  a fresh cache folder before the batch, in a run of one CT (that run, import and check included, is timed apart);
- as saved: the same folder with `--as-saved`, the original's float16 graph compiled by XLA for each new input size.

All three use the shipped SCN, so only the localization differs. Prints the localization seconds of each case and,
per way, the medians over the cases done, the batch's wall time per case and its peak RSS. (The original's
localization finds no organ on the oblique DICOM slab: that case fails with both of its ways, as it should.)

    python benchmarks/original_models.py [--original DIR] [--device cpu] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from locations import DATA, ORIGINAL, REPO_ROOT

SHIPPED = REPO_ROOT / "submitted_saved_models"
CASES = (
    "ts_example_ct",
    "ts_example_ct_sm",
    "ts_example_ct_sm_lpi",
    "ts_example_ct_sm_asl",
    "ts_example_ct_sm_oblique",
    "ts_example_ct_sm_aniso",
    "ts_example_ct_dicom",
    "ts_example_ct_dicom_oblique",
    "ts_example_ct_dicom_aniso",
)
"""The shared CTs the networks can take (the 3-slice one is refused as too short)."""


def case_folder(folder: Path) -> Path:
    """A folder of links to the shared CTs (files and DICOM folders), as a user's batch."""
    cases = {case["id"]: case for case in json.loads((DATA / "cases.json").read_text())}
    folder.mkdir()
    for case_id in CASES:
        source = DATA / cases[case_id]["image"]
        if not source.exists():  # a variant the tests make, where the data folder does not hold it
            continue
        suffix = "_0000.nii.gz" if source.is_file() else ""
        (folder / f"{case_id}{suffix}").symlink_to(source.resolve(), target_is_directory=source.is_dir())
    return folder


def original_format_models(folder: Path, original: Path) -> Path:
    """The original's localization SavedModel beside the shipped SCN."""
    folder.mkdir()
    (folder / "localization").symlink_to(original.resolve(), target_is_directory=True)
    (folder / "segmentation").symlink_to(SHIPPED / "segmentation", target_is_directory=True)
    return folder


def predict(inputs: Path, models: Path, work: Path, name: str, extra: list[str], cache: Path) -> dict:
    """One predict batch in a fresh process: its report, and its wall time."""
    report = work / f"{name}.json"
    command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-q", "-i", str(inputs)]
    command += ["-o", str(work / f"{name}.out"), "--models", str(models), "--report", str(report), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "EFFICIENTSCN_CACHE": str(cache)})
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1) or not report.is_file():  # 1: some case failed, the report says which
        raise RuntimeError(f"predict ({name}) failed:\n{done.stderr[-3000:]}")
    return {**json.loads(report.read_text()), "wall": wall}


def _by_case(report: dict) -> dict[str, dict]:
    return {Path(case["input"]).name.removesuffix("_0000.nii.gz"): case for case in report["cases"]}


def _localization_seconds(case: dict) -> str:
    return f"{case['seconds']['localization']:.2f}" if case["status"] == "done" else case["status"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--original",
        type=Path,
        default=ORIGINAL / "submitted_saved_models" / "localization",
        help="the original's localization SavedModel (default: %(default)s)",
    )
    parser.add_argument("--device", choices=("cpu", "gpu"))
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    extra = ["--precision", args.precision] + (["--device", args.device] if args.device else [])

    with tempfile.TemporaryDirectory(prefix="efficientscn-original-") as temporary:
        work = Path(temporary)
        inputs = case_folder(work / "cts")
        original = original_format_models(work / "original", args.original)
        cache = work / "cache"
        start = time.perf_counter()  # the import, on the batch's first CT, in a run of one case
        one = work / "one"
        one.mkdir()
        first = sorted(inputs.iterdir())[0]
        (one / first.name).symlink_to(first.resolve(), target_is_directory=first.is_dir())
        predict(one, original, work, "import", extra, cache)
        first_run_seconds = time.perf_counter() - start
        ways = {
            "ours": predict(inputs, SHIPPED, work, "ours", extra, cache),
            "imported": predict(inputs, original, work, "imported", extra, cache),
            "as saved": predict(inputs, original, work, "as_saved", [*extra, "--as-saved"], cache),
        }

    print(f"\nthe original's localization model, {len(CASES)} shared CTs in one batch per way; seconds")
    print("case | localization input (z,y,x) | " + " | ".join(f"localization, {way}" for way in ways))
    by_case = {way: _by_case(report) for way, report in ways.items()}
    for case_id in CASES:
        cases = [by_case[way][case_id] for way in ways]
        size = "x".join(map(str, cases[0]["details"].get("localization_input_zyx", [])))
        print(f"{case_id} | {size} | " + " | ".join(_localization_seconds(case) for case in cases))
    print("way | precision of the localization | median localization | median case | batch wall / case | peak RSS")
    for way, report in ways.items():
        done = [case for case in report["cases"] if case["status"] == "done"]
        localization = statistics.median(case["seconds"]["localization"] for case in done)
        total = statistics.median(sum(case["seconds"].values()) for case in done)
        precision = report["models"]["localization"]["precision"]
        print(
            f"{way} | {precision} | {localization:.2f} | {total:.2f} | {report['wall'] / len(report['cases']):.2f} | "
            f"{report['peak_rss_mb'] / 1024:.2f} GB ({len(done)} of {len(report['cases'])} done)"
        )
    print(f"the predict run of one CT that imports and checks it (once, then cached): {first_run_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
