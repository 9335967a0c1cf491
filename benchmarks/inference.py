"""Inference start-up, speed and memory of `efficientscn predict`: a lone CT from process start, a batch, a large CT.

For each input it measures, in fresh processes:
- a lone CT, `efficientscn predict -i <CT>`, from process start to exit (median of `--repeats` runs with the
  graph cache filled; the first run on a machine, which traces the networks into the cache, once), and its peak RSS;
- where that time and memory go (`startup_split`): importing TensorFlow and the package, loading the networks'
  graphs, the first case's stages and the same stages again (a first call instantiates the graphs), with the
  resident memory after each step and the peak within it;
- a batch of `--repeats` copies: per-case seconds per stage (medians of cases 2..n), the batch's peak RSS, and the
  I/O floor (the time merely to read the CT onto the canonical grid and to write a label of its size);
- a batch mixing the large CT with three 512 x 512 x 200 ones against the large CT alone (with `--large`).

Inputs: a synthetic 512 x 512 x 200 CT (a real abdomen stretched along z and resampled to 0.8 x 0.8 x 2 mm), real
CTs of ../shared/data, and with `--large` a 512 x 512 x 1208 CT at 0.8 mm (317 M voxels, a whole-body size). The
SCN alone at its largest input (160 x 128 x 160) is timed as well, since the organ box decides the size it runs at.

    python benchmarks/inference.py [--models DIR] [--repeats 5] [--device cpu] [--precision auto] [--large]

Without --models it builds a temporary models folder: the original's released localization weights in our network
(the boxes are the real ones) and an untrained SCN of the paper's size (its labels are meaningless, its speed is not).
The graph cache is a temporary folder too, so the first run is a machine's first.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
STAGES = ("read", "localization", "segmentation", "write")
T = TypeVar("T")
Z_STRETCH = 1.6

logger = logging.getLogger("benchmark")


def synthetic_ct(
    path: Path, size_xyz: tuple[int, int, int] = (512, 512, 200), spacing: tuple[float, float, float] = (0.8, 0.8, 2.0)
) -> Path:
    """A real abdomen (ts_example_ct) stretched 1.6 times along z, so that its organ box needs the SCN's largest
    input, resampled onto a grid of `size_xyz` voxels of `spacing` mm around its centre (air beyond it)."""
    from efficientscn.imaging.geometry import Grid
    from efficientscn.imaging.read import read_ct
    from efficientscn.imaging.resample import AIR_HU, resample_onto
    from efficientscn.imaging.write import write_image_atomic

    source = read_ct(SHARED / "data" / "totalsegmentator" / "example_ct.nii.gz")
    source.SetSpacing((*source.GetSpacing()[:2], source.GetSpacing()[2] * Z_STRETCH))
    centre = source.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in source.GetSize()])
    corner = np.array(centre) - np.array(source.GetDirection()).reshape(3, 3) @ (
        (np.array(size_xyz) - 1) / 2 * np.array(spacing)
    )
    grid = Grid(size_xyz, spacing, tuple(float(c) for c in corner), source.GetDirection())  # type: ignore[arg-type]
    resampled = resample_onto(source, grid, "linear", AIR_HU)
    return write_image_atomic(resampled, path, overwrite=True)


def repeated_abdomen_ct(
    path: Path, size_xyz: tuple[int, int, int], spacing: tuple[float, float, float], first_slice: int = 0
) -> Path:
    """A real abdomen (ts_example_ct) resampled to `spacing` on a `size_xyz[:2]` plane and repeated along z from
    its slice `first_slice` on: the organ box grows with the number of slices, up to the whole scan, which the
    stretched abdomen of `synthetic_ct` does not (the localization finds one abdomen's organs there)."""
    from efficientscn.imaging.geometry import Grid
    from efficientscn.imaging.read import read_ct
    from efficientscn.imaging.resample import AIR_HU, resample_onto
    from efficientscn.imaging.write import write_image_atomic

    source = read_ct(SHARED / "data" / "totalsegmentator" / "example_ct.nii.gz")
    centre = source.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in source.GetSize()])
    slices = round(source.GetSize()[2] * source.GetSpacing()[2] / spacing[2])
    one_size = np.array([size_xyz[0], size_xyz[1], slices])
    direction = np.array(source.GetDirection()).reshape(3, 3)
    corner = np.array(centre) - direction @ ((one_size - 1) / 2 * np.array(spacing))
    grid = Grid(tuple(int(s) for s in one_size), spacing, tuple(float(c) for c in corner), source.GetDirection())  # type: ignore[arg-type]
    one = sitk.GetArrayFromImage(resample_onto(source, grid, "linear", AIR_HU))
    copies = -(-(first_slice + size_xyz[2]) // slices)
    image = sitk.GetImageFromArray(np.concatenate([one] * copies)[first_slice : first_slice + size_xyz[2]])
    del one
    image.SetSpacing(spacing)
    image.SetDirection(source.GetDirection())
    return write_image_atomic(image, path, overwrite=True)


def temporary_models(folder: Path) -> Path:
    """The original's localization weights in our network, and an untrained (seeded) SCN, exported as usual."""
    from efficientscn.model.networks import LocalizationNetConfig, SCNConfig
    from efficientscn.model.savedmodel import save_network
    from efficientscn.model.specs import LOCALIZATION_SPEC, SEGMENTATION_SPEC
    from efficientscn.nn.localization import build_localization_net
    from efficientscn.nn.localization import load_original_localization_weights as load_original

    localization = build_localization_net()
    load_original(localization, SHARED / "reference" / "original_saved_models" / "localization")
    save_network(LOCALIZATION_SPEC, localization, LocalizationNetConfig(), folder / "localization")
    save_network(
        SEGMENTATION_SPEC, SEGMENTATION_SPEC.build(SCNConfig(seed=0)), SCNConfig(seed=0), folder / "segmentation"
    )
    return folder


def in_child(function: Callable[..., T], *arguments: Any) -> T:
    """`function(*arguments)` run in a child process: this process stays small, so that the processes it starts
    measure their own memory (a child may inherit its parent's resident size in getrusage)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *arguments).result()


def run_batch(ct: Path, models: Path, repeats: int, work: Path, extra: list[str]) -> dict:
    """`efficientscn predict` on `repeats` copies of `ct` in a fresh process; per-stage seconds and peak RSS."""
    inputs = work / f"{ct.name}.inputs"
    inputs.mkdir()
    for index in range(repeats):
        (inputs / f"case{index:02d}{''.join(ct.suffixes) if ct.is_file() else ''}").symlink_to(ct.resolve())
    report = work / f"{ct.name}.json"
    command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-q", "-i", str(inputs)]
    command += ["-o", str(work / f"{ct.name}.out"), "--models", str(models), "--report", str(report), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"predict failed on {ct}:\n{done.stderr[-3000:]}")
    record = json.loads(report.read_text())
    cases = record["cases"]
    later = cases[1:] or cases
    medians = {stage: statistics.median(case["seconds"][stage] for case in later) for stage in STAGES}
    return {
        "first": sum(cases[0]["seconds"][stage] for stage in STAGES),
        "medians": medians,
        "total": sum(medians.values()),
        "wall": wall,
        "cases": len(cases),
        "peak_rss_mb": record["peak_rss_mb"],
        "precision": record["precision"],
        "sizes": (cases[0]["details"]["localization_input_zyx"], cases[0]["details"]["segmentation_input_zyx"]),
    }


def io_floor(ct: Path, repeats: int, work: Path) -> tuple[float, float]:
    """Median seconds to read `ct` onto the canonical grid, and to write a uint8 label of its grid."""
    from efficientscn.imaging.canonical import CanonicalCT
    from efficientscn.imaging.write import write_label

    reads, writes = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        on_grid = CanonicalCT.read(ct)  # as predict reads it: header checks, oblique resampling, canonical view
        reads.append(time.perf_counter() - start)
        label = np.zeros(on_grid.array_zyx.shape, np.uint8)
        label[::7, ::5, ::3] = 1  # not all zeros: compression has something to do, as with a real label
        start = time.perf_counter()
        write_label(on_grid.restore(label), work / "floor.nii.gz", overwrite=True)
        writes.append(time.perf_counter() - start)
    return statistics.median(reads), statistics.median(writes)


def largest_scn_seconds(models: Path, device: str, precision: str, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of the SCN on its largest input, 160 x 128 x 160, and the peak RSS (GB) of a process doing it."""
    script = f"""
import json, statistics, time
import tensorflow as tf
from pathlib import Path
from efficientscn.infer.models import load_network, select_device
from efficientscn.model.precision import inference_precision
device = select_device({device!r})
network = load_network(Path({str(models)!r}) / "segmentation", "segmentation", device,
                       inference_precision(device, {precision!r}))
image = tf.zeros((1, 1, 160, 128, 160), tf.float16)
network.run(image)
times = []
for _ in range({repeats}):
    start = time.perf_counter(); network.run(image).numpy(); times.append(time.perf_counter() - start)
peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
print(json.dumps([statistics.median(times), int(peak.split()[1]) / 2**20]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    seconds, peak_gb = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, peak_gb


STARTUP_PROBE = """
import dataclasses, json, sys, time
from pathlib import Path
start = last = time.perf_counter()
steps = []

def memory():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return [int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")]

def mark(step):
    global last
    now = time.perf_counter()
    steps.append([step, now - last, *memory()])
    Path("/proc/self/clear_refs").write_text("5")  # the next step's peak is its own
    last = time.perf_counter()

from efficientscn.infer.runtime import prepare_environment
prepare_environment(lone_ct=True)  # as predict prepares a lone CT
import tensorflow
mark("import TensorFlow")
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.infer.segmenter import Segmenter
from efficientscn.imaging.write import write_label
mark("import the package")
ct_path, models, output = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
segmenter = Segmenter(models, device=sys.argv[4] or None, precision=sys.argv[5], probe=ct_path)
mark("load the networks' graphs")
pipeline = segmenter.pipeline
with segmenter.running():
    ct = CanonicalCT.read(ct_path)
    mark("read the CT")

    def marked(network, before, after):
        def run(image):
            mark(before)
            result = network.run(image)
            result.numpy()
            mark(after)
            return result
        return dataclasses.replace(network, run=run)

    plain = pipeline.localization, pipeline.segmentation
    pipeline.localization = marked(plain[0], "localization: input", "localization: network")
    pipeline.segmentation = marked(plain[1], "segmentation: box, mask, input", "segmentation: SCN")
    label = pipeline.segment(ct.array_zyx, ct.spacing_zyx).label
    mark("segmentation: label on the CT grid")
    write_label(ct.restore(label), output / "label.nii.gz", overwrite=True)
    mark("restore and write the label")
    pipeline.localization, pipeline.segmentation = plain
    pipeline.segment(ct.array_zyx, ct.spacing_zyx)
    mark("the same case again (instantiated)")
print(json.dumps(steps))
"""


def startup_split(ct: Path, models: Path, work: Path, device: str, precision: str) -> list[list]:
    """[step, seconds, RSS after (MB), peak within (MB)] of a lone CT's run, step by step (see STARTUP_PROBE)."""
    output = work / f"{ct.name}.split"
    output.mkdir(exist_ok=True)
    command = [sys.executable, "-c", STARTUP_PROBE, str(ct), str(models), str(output), device, precision]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the start-up probe failed on {ct}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def lone_run(ct: Path, models: Path, work: Path, extra: list[str]) -> tuple[float, float]:
    """Seconds from process start to exit of `efficientscn predict -i <ct>`, and its peak RSS (GB, from its report)."""
    output, report = work / f"{ct.name}.lone", work / f"{ct.name}.lone.json"
    command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-q", "-i", str(ct), "-o", str(output)]
    command += ["--models", str(models), "--report", str(report), "--overwrite", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"predict failed on {ct}:\n{done.stderr[-3000:]}")
    return seconds, json.loads(report.read_text())["peak_rss_mb"] / 1024


def mixed_batch_peaks(large: Path, other: Path, models: Path, work: Path, extra: list[str]) -> tuple[float, float]:
    """Peak RSS (GB) of a batch of `other` three times and `large` in between, and of a batch of `large` alone."""
    peaks = []
    for name, cts in (("mixed", (other, large, other, other)), ("large alone", (large,))):
        inputs = work / f"{name}.inputs"
        inputs.mkdir()
        for index, ct in enumerate(cts):
            (inputs / f"case{index:02d}{''.join(ct.suffixes)}").symlink_to(ct.resolve())
        report = work / f"{name}.json"
        command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-q", "-i", str(inputs)]
        command += ["-o", str(work / f"{name}.out"), "--models", str(models), "--report", str(report), *extra]
        subprocess.run(command, capture_output=True, text=True, check=True)
        peaks.append(json.loads(report.read_text())["peak_rss_mb"] / 1024)
    return peaks[0], peaks[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="models folder (default: a temporary one, see above)")
    parser.add_argument("--repeats", type=int, default=5, help="cases per batch and lone runs (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "gpu"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--cases", nargs="*", default=["ts_example_ct", "ts_example_ct_dicom"], help="shared case IDs")
    parser.add_argument("--large", action="store_true", help="also the 512 x 512 x 1208 CT and a mixed batch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    extra = ["--precision", args.precision] + (["--device", args.device] if args.device else [])

    cases_json = {case["id"]: case for case in json.loads((SHARED / "data" / "cases.json").read_text())}
    with tempfile.TemporaryDirectory(prefix="efficientscn-benchmark-") as temporary:
        work = Path(temporary)
        os.environ["EFFICIENTSCN_CACHE"] = str(work / "cache")  # empty: the first run is a machine's first
        models = args.models or temporary_models(work / "models")
        inputs = {"synthetic 512x512x200": in_child(synthetic_ct, work / "synthetic_0000.nii.gz")}
        for case_id in args.cases:
            inputs[case_id] = SHARED / "data" / cases_json[case_id]["image"]
        once = set()  # inputs too slow to repeat: one lone run, a batch of two
        if args.large:
            large = in_child(synthetic_ct, work / "large_0000.nii.gz", (512, 512, 1208), (0.8, 0.8, 0.8))
            inputs["synthetic 512x512x1208, 0.8 mm"] = large
            once.add("synthetic 512x512x1208, 0.8 mm")
        first_run = lone_run(inputs["synthetic 512x512x200"], models, work, extra)
        logger.info("first run on this machine (tracing into the cache): %.1f s", first_run[0])
        rows, splits = [], {}
        for name, ct in inputs.items():
            logger.info("%s: lone runs, the start-up split, %d cases in one batch ...", name, args.repeats)
            lone = [lone_run(ct, models, work, extra) for _ in range(1 if name in once else args.repeats)]
            splits[name] = startup_split(ct, models, work, args.device or "", args.precision)
            result = run_batch(ct, models, 2 if name in once else args.repeats, work, extra)
            floor = in_child(io_floor, ct, 3, work)
            rows.append((name, statistics.median(s for s, _ in lone), max(p for _, p in lone), result, floor))
        mixed = mixed_batch_peaks(large, inputs["synthetic 512x512x200"], models, work, extra) if args.large else None
        largest = largest_scn_seconds(models, args.device or "cpu", args.precision)

    print(
        f"\nprecision: {rows[0][3]['precision']}; first run on a machine (graphs traced into the cache): "
        f"{first_run[0]:.1f} s, peak {first_run[1]:.2f} GB for the synthetic 512x512x200 CT"
    )
    print("\nlone CT, process start to exit (median of runs with the cache filled) | peak RSS")
    for name, seconds, peak, _, _ in rows:
        print(f"{name} | {seconds:.1f} s | {peak:.2f} GB")
    for name, steps in splits.items():
        print(f"\nwhere a lone run of {name} goes: step | seconds | RSS after | peak within")
        for step, seconds, rss, peak in steps:
            print(f"{step} | {seconds:.2f} | {rss / 1024:.2f} GB | {peak / 1024:.2f} GB")
    print("\nbatch: medians of cases 2..n (s)")
    header = "input | loc / seg input (z,y,x) | read | localization | segmentation | write | total | first case | "
    print(header + "batch wall / case | peak RSS | I/O floor read + write")
    for name, _, _, result, (read, write) in rows:
        m = result["medians"]
        sizes = "x".join(map(str, result["sizes"][0])) + " / " + "x".join(map(str, result["sizes"][1]))
        print(
            f"{name} | {sizes} | {m['read']:.2f} | {m['localization']:.2f} | {m['segmentation']:.2f} | "
            f"{m['write']:.2f} | {result['total']:.2f} | {result['first']:.2f} | "
            f"{result['wall'] / result['cases']:.2f} | {result['peak_rss_mb'] / 1024:.2f} GB | {read:.2f} + {write:.2f}"
        )
    if mixed:
        print(
            f"\nbatch of three 512x512x200 CTs and the 512x512x1208 one: peak {mixed[0]:.2f} GB; "
            f"a batch of the 512x512x1208 CT alone: {mixed[1]:.2f} GB"
        )
    print(f"SCN alone at its largest input 160x128x160: {largest[0]:.2f} s, peak RSS {largest[1]:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
