"""Which one limits training, the sample loader or the network? Prints both rates side by side, per stage.

    python benchmarks/training.py --stage localization          # phantoms shaped like FLARE21 CTs
    python benchmarks/training.py --stage segmentation --dataset DIR  # a preprocessed FLARE-layout dataset

Loader: training samples per second (random samples with the stage's full augmentation: 6 mm whole-CT samples
of the `_small` images for localization, 2 mm organ-box samples of the full images for the SCN) with 1..N worker
processes. Network: training steps per second (forward, backward, Adam, weight average) at a typical and at the
largest network input of the stage, per precision. Each figure is the median over `--repeats` timed rounds after
a warm-up; peak RSS of this process (the loader workers come on top) is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path


def _median_rate(action, count: int, repeats: int) -> float:
    """Median over `repeats` rounds of `count` calls of `action`, in calls per second."""
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            action()
        durations.append((time.perf_counter() - start) / count)
    return 1.0 / statistics.median(durations)


def _phantom_dataset(root: Path, cases: int) -> Path:
    from efficientscn.data.layout import write_phantom_dataset
    from efficientscn.data.preprocess import PreprocessConfig, preprocess_dataset
    from efficientscn.phantom import PhantomGrid

    grid = PhantomGrid(size=(512, 512, 120), spacing_mm=(0.8, 0.8, 2.5))  # a typical FLARE21 abdomen CT
    write_phantom_dataset(root, cases, grid)
    preprocess_dataset(root, PreprocessConfig(folds=2), progress=False)
    return root


DEFAULT_SIZES = {"localization": "64x80x80,256x80x80", "segmentation": "96x96x128,160x128x160"}
"""Typical and largest network inputs (z x y x x) per stage."""


def _task(stage_name: str, dataset: Path):
    from efficientscn.data.layout import FlareDataset
    from efficientscn.train.stages import stage_named

    stage = stage_named(stage_name)
    config = stage.config_type()
    return stage, config, stage.task(FlareDataset(dataset), 0, config)


def loader_rates(stage_name: str, dataset: Path, workers: list[int], samples: int, repeats: int) -> dict[int, float]:
    from efficientscn.data.loader import SampleLoader

    _, _, task = _task(stage_name, dataset)
    rates = {}
    for count in workers:
        with SampleLoader(task.sample_source, task.train_ids, workers=count) as loader:
            for _ in range(max(count, 2)):  # warm-up: workers started and their first sample made
                loader.next()
            rates[count] = _median_rate(loader.next, samples, repeats)
    return rates


def step_rates(
    stage_name: str, dataset: Path, sizes_zyx: list[tuple[int, ...]], precisions: list[str], steps: int, repeats: int
) -> dict[tuple[str, tuple[int, ...]], float]:
    import numpy as np
    import tensorflow as tf

    from efficientscn.train.loop import Trainer

    _, config, task = _task(stage_name, dataset)
    labels = task.sample_signature["label"].shape[-1]
    rates = {}
    for precision in precisions:
        with tempfile.TemporaryDirectory() as run:
            trainer = Trainer(task, replace(config.training, precision=precision), Path(run), record={}, progress=False)
            for size in sizes_zyx:
                rng = np.random.default_rng(0)
                label = np.eye(labels, dtype=np.uint8)[rng.integers(0, labels, size)][np.newaxis]
                image = rng.uniform(-1, 1, (1, *size, 1)).astype(np.float32)
                batch = [{"image": tf.constant(image), "label": tf.constant(label)}]
                trainer.step(batch)  # trace and warm up
                rates[(precision, size)] = _median_rate(partial(trainer.step, batch), steps, repeats)
    return rates


def main() -> None:
    from efficientscn.train.stages import stage_named

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=[*DEFAULT_SIZES, "scn"], default="localization", help="scn: segmentation")
    parser.add_argument("--dataset", type=Path, help="preprocessed FLARE-layout dataset (default: 4 phantoms)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader worker counts to time")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--samples", type=int, default=8, help="samples per timed loader round")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed training round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is printed")
    parser.add_argument("--sizes", help="network inputs z x y x x, comma-separated (default: the stage's)")
    args = parser.parse_args()
    sizes = [
        tuple(int(v) for v in text.split("x"))
        for text in (args.sizes or DEFAULT_SIZES[stage_named(args.stage).name]).split(",")
    ]

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}")
    with tempfile.TemporaryDirectory() as scratch:
        dataset = args.dataset or _phantom_dataset(Path(scratch) / "phantoms", 4)
        print(f"stage: {args.stage}; dataset: {args.dataset or '4 phantoms of 512x512x120 at 0.8x0.8x2.5 mm'}")
        for workers, rate in loader_rates(args.stage, dataset, args.workers, args.samples, args.repeats).items():
            print(f"loader: {workers} worker(s): {rate:.2f} samples/s")
        rates = step_rates(args.stage, dataset, sizes, args.precisions, args.steps, args.repeats)
        for (precision, size), rate in rates.items():
            shape = "x".join(str(v) for v in size)
            print(f"network: {precision:8s} input {shape:>11s} (z x y x x): {rate:.3f} steps/s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS (this process): {peak_mb:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
