"""Throughput of `efficientscn predict --cluster local:N` with 1 and 2 worker processes (1 thread each), and a worker's
start-up time.

A batch's wall time holds fixed costs (starting the cluster, each worker's start-up, closing) beside the cases, so each
worker count runs a small and a large batch of copies of one real CT, and the throughput is the difference: (large -
small cases) / (large - small seconds). A worker's start-up is the time its plugin took from its arrival to its models
loaded (TensorFlow's import included), from the report. The worker counts run alternately, `--repeats` times each, so
that both see the same load of a shared machine; medians are printed, with the machine's load average.

    python benchmarks/cluster.py [--models DIR] [--case ts_example_ct] [--small 3] [--large 9] [--repeats 2]
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

from locations import DATA


def case_image(case_id: str) -> Path:
    cases = json.loads((DATA / "cases.json").read_text())
    return DATA / next(case["image"] for case in cases if case["id"] == case_id)


def batch(folder: Path, image: Path, count: int) -> Path:
    """A folder of `count` links to `image`, each its own case."""
    folder.mkdir(parents=True)
    for k in range(count):
        (folder / f"copy_{k:03d}_0000.nii.gz").symlink_to(image)
    return folder


def run(inputs: Path, output: Path, workers: int, models: Path | None) -> tuple[float, list[float]]:
    """Seconds of one batch from process start to exit, and each worker's start-up seconds."""
    report = output.parent / f"{output.name}.json"
    command = [sys.executable, "-m", "efficientscn.cli", "predict", "-q", "-i", str(inputs), "-o", str(output)]
    command += ["--cluster", f"local:{workers}", "--report", str(report), "--device", "cpu"]
    if models is not None:
        command += ["--models", str(models)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    facts = json.loads(report.read_text())
    return seconds, [worker["start_seconds"] for worker in facts["cluster"]["workers"].values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, help="models folder (default: the shipped demonstration models)")
    parser.add_argument("--case", default="ts_example_ct", help="the shared CT copied into the batches")
    parser.add_argument("--small", type=int, default=3, help="cases of the small batch")
    parser.add_argument("--large", type=int, default=9, help="cases of the large batch")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    image = case_image(args.case)
    counts = (1, 2)
    seconds: dict[tuple[int, int], list[float]] = {}
    startups: dict[int, list[float]] = {count: [] for count in counts}
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        inputs = {size: batch(root / f"in_{size}", image, size) for size in (args.small, args.large)}
        first = root / "warm"  # the graph cache filled once, so that no measured run traces
        run(inputs[args.small], first, 1, args.models)
        for repeat in range(args.repeats):
            for workers in counts:  # alternately, under the same load
                for size in (args.small, args.large):
                    output = root / f"out_{workers}_{size}_{repeat}"
                    took, starts = run(inputs[size], output, workers, args.models)
                    seconds.setdefault((workers, size), []).append(took)
                    startups[workers].extend(starts)
                    print(f"{workers} worker(s), {size} cases: {took:.1f} s, start-up {starts}", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[2]:.1f} (15 min)")
    print(f"{args.case} copies; medians of {args.repeats} runs per cell\n")
    print("| workers x threads | small batch | large batch | cases per minute | worker start-up |")
    print("|---|---|---|---|---|")
    for workers in counts:
        small = statistics.median(seconds[(workers, args.small)])
        large = statistics.median(seconds[(workers, args.large)])
        rate = (args.large - args.small) / (large - small) * 60
        startup = statistics.median(startups[workers])
        cells = [f"{workers} x 1", f"{args.small}: {small:.1f} s", f"{args.large}: {large:.1f} s"]
        print("| " + " | ".join([*cells, f"{rate:.1f}", f"{startup:.1f} s"]) + " |")


if __name__ == "__main__":
    main()
