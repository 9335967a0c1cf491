"""Inference start-up, speed and memory of `efficientscn predict`: a lone CT from process start, a batch, large CTs,
the slab size of slab-wise inference, and another version of the package.

For each input it measures, in fresh processes, peak RSS by GNU time (`/usr/bin/time -v`) as a user would:
- a lone CT, `efficientscn predict -i <CT>`, from process start to exit (median of `--repeats` runs with the
  graph cache filled with a lone CT's graphs and a folder's; the first run on a machine, which traces a lone CT's
  networks into the cache, once), its peak RSS, and beside it the README's memory model
  (`efficientscn.infer.runtime.peak_memory_bytes`);
- where that time and memory go (`startup_split`): importing TensorFlow and the package, loading the networks'
  graphs, the first case's stages and the same stages again (a first call instantiates the graphs), with the
  resident memory after each step and the peak within it;
- a batch of `--repeats` copies: per-case seconds per stage (medians of cases 2..n), the batch's peak RSS, and the
  I/O floor (the time merely to read the CT onto the canonical grid and to write a label of its size);
- a batch mixing the large CT with three 512 x 512 x 200 ones against the large CT alone (with `--large`);
- each `--slab-sizes` value of `--slab-memory` on the CT giving the SCN its largest input: lone seconds and peak, a
  batch's seconds per case and peak, and its label's differing voxels against the whole networks' ("off");
- with `--baseline REV`: batches of 6 of the 512 x 512 x 151 CT by this package and by git revision REV's (one that
  reads this version's exports, e.g. eb3ca70, the last before slab-wise inference), alternately over `--rounds`
  (seconds per case, peak RSS, the load average seen, differing label voxels).

Inputs: a synthetic 512 x 512 x 200 CT (a real abdomen stretched along z and resampled to 0.8 x 0.8 x 2 mm), two
512 x 512 x 151 CTs at 0.8 x 0.8 x 2.5 mm made of a real abdomen repeated along z, whose organ boxes give the SCN
a 128 x 128 x 160 and its largest input, 160 x 128 x 160; real CTs of ../shared/data; with `--large` a 512 x 512 x
1208 CT at 0.8 mm (317 M voxels, a whole-body size) stretched as the first, and one of abdomens repeated along it,
whose organ box spans the scan; with `--huge` a 512 x 512 x 2416 one of those (634 M voxels). The SCN alone at its
largest input is timed as well, since the organ box decides the size it runs at.

    python benchmarks/inference.py [--models DIR] [--repeats 5] [--device cpu] [--precision auto] [--large]
        [--huge] [--slab-sizes off 32 64 128 256] [--rounds 3] [--baseline eb3ca70]

Without --models it builds a temporary models folder: the original's released localization weights in our network
(the boxes are the real ones) and an untrained SCN of the paper's size (its labels are meaningless, its speed is not).
The graph cache is a temporary folder too, so the first run is a machine's first.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
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
from locations import DATA, ORIGINAL, REPO_ROOT

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

    source = read_ct(DATA / "totalsegmentator" / "example_ct.nii.gz")
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

    source = read_ct(DATA / "totalsegmentator" / "example_ct.nii.gz")
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
    from efficientscn.model.specs import LOCALIZATION_SPEC, SEGMENTATION_SPEC
    from efficientscn.nn.config import LocalizationNetConfig, SCNConfig
    from efficientscn.nn.localization import build_localization_net
    from efficientscn.nn.localization import load_original_localization_weights as load_original

    localization = build_localization_net()
    load_original(localization, ORIGINAL / "submitted_saved_models" / "localization")
    LOCALIZATION_SPEC.save(localization, LocalizationNetConfig(), folder / "localization")
    SEGMENTATION_SPEC.save(SEGMENTATION_SPEC.build(SCNConfig(seed=0)), SCNConfig(seed=0), folder / "segmentation")
    return folder


def in_child(function: Callable[..., T], *arguments: Any) -> T:
    """`function(*arguments)` run in a child process: this process stays small, so that the processes it starts
    measure their own memory (a child may inherit its parent's resident size in getrusage)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *arguments).result()


TIME = Path("/usr/bin/time")
"""GNU time: the peak RSS of a whole command (`-v`), as a user measures it; without it the report's figure."""


def predict_command(
    inputs: Path, output: Path, models: Path, extra: list[str], *, python_path: Path | None = None
) -> tuple[float, float, dict]:
    """`efficientscn predict -i inputs -o output` in a fresh process: (wall seconds, peak RSS in GiB, its report).
    `python_path`: a package folder put first on PYTHONPATH (another version of the package)."""
    report = output.with_name(f"{output.name}.json")
    command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-q", "-i", str(inputs)]
    command += ["-o", str(output), "--models", str(models), "--report", str(report), "--overwrite", *extra]
    timed = [str(TIME), "-v", *command] if TIME.is_file() else command
    environment = dict(os.environ)
    if python_path is not None:
        environment["PYTHONPATH"] = str(python_path)
    start = time.perf_counter()
    done = subprocess.run(timed, capture_output=True, text=True, env=environment)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"predict failed on {inputs}:\n{done.stderr[-3000:]}")
    record = json.loads(report.read_text())
    # predict resets the kernel's peak at each case to measure the case's own (/proc/self/clear_refs), so GNU time
    # sees the peak since the last case began; the report keeps the process's
    peak_kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    peak = max(int(peak_kb.group(1)) / 2**20 if peak_kb else 0.0, record["peak_rss_mb"] / 1024)
    return wall, peak, record


def batch_folder(ct: Path, copies: int, folder: Path) -> Path:
    """A folder of `copies` links to `ct`, a batch of identical cases."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(copies):
        (folder / f"case{index:02d}{''.join(ct.suffixes) if ct.is_file() else ''}").symlink_to(ct.resolve())
    return folder


def run_batch(ct: Path, models: Path, repeats: int, work: Path, extra: list[str]) -> dict:
    """`efficientscn predict` on `repeats` copies of `ct` in a fresh process; per-stage seconds and peak RSS."""
    inputs = batch_folder(ct, repeats, work / f"{ct.name}.inputs")
    wall, peak, record = predict_command(inputs, work / f"{ct.name}.out", models, extra)
    shutil.rmtree(inputs)
    return batch_figures(record) | {"wall": wall, "peak_gb": peak}


def batch_figures(record: dict) -> dict:
    """Per-case seconds of a batch's report: per-stage medians of cases 2..n (the first loads the graphs)."""
    cases = record["cases"]
    later = cases[1:] or cases
    medians = {stage: statistics.median(case["seconds"][stage] for case in later) for stage in STAGES}
    return {
        "first": sum(cases[0]["seconds"][stage] for stage in STAGES),
        "medians": medians,
        "total": sum(medians.values()),
        "cases": len(cases),
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
    """Median seconds of the SCN on its largest input, 160 x 128 x 160, and the peak RSS (GiB) of a process doing it."""
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
from efficientscn.segmenter import Segmenter
from efficientscn.imaging.write import write_label
from efficientscn.predict.plausibility import check_organs
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
    check_organs(label, ct.spacing_zyx)
    mark("organ checks")
    way_back = ct.way_back
    del ct  # as predict frees it where no output reads it
    write_label(way_back.restore(label), output / "label.nii.gz", overwrite=True)
    mark("restore and write the label")
    del label
    pipeline.localization, pipeline.segmentation = plain
    ct = CanonicalCT.read(ct_path)
    pipeline.segment(ct.array_zyx, ct.spacing_zyx)
    mark("the same case again (read, segmented)")
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


def lone_run(ct: Path, models: Path, work: Path, extra: list[str]) -> tuple[float, float, dict]:
    """Seconds from process start to exit of `efficientscn predict -i <ct>`, its peak RSS (GiB) and its report."""
    return predict_command(ct, work / f"{ct.name}.lone", models, extra)


def mixed_batch_peaks(large: Path, other: Path, models: Path, work: Path, extra: list[str]) -> tuple[float, float]:
    """Peak RSS (GiB) of a batch of `other` three times and `large` in between, and of a batch of `large` alone."""
    peaks = []
    for name, cts in (("mixed", (other, large, other, other)), ("large alone", (large,))):
        inputs = work / f"{name}.inputs"
        inputs.mkdir()
        for index, ct in enumerate(cts):
            (inputs / f"case{index:02d}{''.join(ct.suffixes)}").symlink_to(ct.resolve())
        peaks.append(predict_command(inputs, work / f"{name}.out", models, extra)[1])
    return peaks[0], peaks[1]


def modelled_peak_gb(record: dict, ct: Path) -> tuple[float, float]:
    """The README's memory model (`runtime.peak_memory_bytes`) for a case of a predict report, in GiB: lone (the
    system allocator) and in a batch (TensorFlow's pool)."""
    from efficientscn.imaging.read import header_size
    from efficientscn.infer.runtime import peak_memory_bytes

    sizes = record["cases"][0]["details"]["segmentation_input_zyx"]
    networks = [record["models"][stage] for stage in ("localization", "segmentation")]  # beside them: "utils"
    slabs = all(network.get("slab_budget_mb") is not None for network in networks)
    voxels, scn = math.prod(header_size(ct)), math.prod(sizes)
    lone, batch = (peak_memory_bytes(voxels, scn, slabs=slabs, allocator_name=name) for name in ("system", "pool"))
    return lone / 2**30, batch / 2**30


def labels_differing(first: Path, second: Path) -> int:
    """Voxels in which two label files differ."""
    return int(
        np.count_nonzero(
            sitk.GetArrayViewFromImage(sitk.ReadImage(str(first)))
            != sitk.GetArrayViewFromImage(sitk.ReadImage(str(second)))
        )
    )


def slab_sizes(ct: Path, models: Path, work: Path, budgets: list[str], rounds: int, extra: list[str]) -> dict:
    """Per `--slab-memory` value, alternately over `rounds`: the lone run's peak RSS and seconds, a batch of 4
    copies' per-case seconds (medians of cases 2-4) and peak, and the label's differing voxels against "off"."""
    results: dict[str, dict[str, list]] = {
        budget: {"lone": [], "lone_peak": [], "case": [], "batch_peak": []} for budget in budgets
    }
    inputs = batch_folder(ct, 4, work / "slab-sizes.inputs")
    for budget in budgets:  # each budget's graphs traced into the cache first, outside the figures
        predict_command(ct, work / "slab-warm-up", models, [*extra, "--slab-memory", budget])
    labels = {}
    for _ in range(rounds):
        for budget in budgets:
            option = ["--slab-memory", budget]
            seconds, peak, _ = predict_command(ct, work / f"slab-{budget}.lone", models, extra + option)
            results[budget]["lone"].append(seconds)
            results[budget]["lone_peak"].append(peak)
            _, batch_peak, record = predict_command(inputs, work / f"slab-{budget}.batch", models, extra + option)
            results[budget]["case"].append(batch_figures(record)["total"])
            results[budget]["batch_peak"].append(batch_peak)
            labels[budget] = next((work / f"slab-{budget}.lone").glob("*.nii.gz"))
    reference = labels.get("off")
    return {
        budget: {
            "lone": statistics.median(found["lone"]),
            "lone_peak": max(found["lone_peak"]),
            "case": statistics.median(found["case"]),
            "batch_peak": max(found["batch_peak"]),
            "differing": None if reference is None else labels_differing(reference, labels[budget]),
        }
        for budget, found in results.items()
    }


def baseline_package(revision: str, folder: Path) -> Path:
    """The package of git `revision` of this repository extracted into `folder` (to run it through PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision, "efficientscn"], capture_output=True, check=True
    )
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def against_baseline(ct: Path, models: Path, work: Path, revision: str, rounds: int, extra: list[str]) -> dict:
    """A batch of 6 copies of `ct` by this package and by `revision`'s, alternately over `rounds`: per-case seconds
    (medians of cases 2-6 of each batch, then of the rounds), peak RSS, the load average, and the labels' differing
    voxels."""
    old = baseline_package(revision, work / "baseline")
    inputs = batch_folder(ct, 6, work / "baseline.inputs")
    found: dict[str, dict[str, list]] = {name: {"case": [], "wall": [], "peak": []} for name in ("new", "old")}
    loads = []
    predict_command(ct, work / "baseline-warm-up", models, extra, python_path=old)  # its graphs traced, uncounted
    for _ in range(rounds):
        for name, python_path in (("old", old), ("new", None)):
            loads.append(os.getloadavg()[0])
            wall, peak, record = predict_command(
                inputs, work / f"baseline-{name}", models, extra, python_path=python_path
            )
            found[name]["case"].append(batch_figures(record)["total"])
            found[name]["wall"].append(wall / 6)
            found[name]["peak"].append(peak)
    differing = sum(
        labels_differing(label, work / "baseline-new" / label.name)
        for label in (work / "baseline-old").glob("*.nii.gz")
    )
    return {
        name: {
            "case": statistics.median(values["case"]),
            "cases": values["case"],
            "wall": statistics.median(values["wall"]),
            "peak": max(values["peak"]),
        }
        for name, values in found.items()
    } | {"loads": loads, "differing": differing}


def make_inputs(args: argparse.Namespace, work: Path) -> tuple[dict[str, Path], set[str]]:
    """The benchmark's CTs by name, and those too slow to repeat (one lone run, a batch of two)."""
    cases_json = {case["id"]: case for case in json.loads((DATA / "cases.json").read_text())}
    inputs = {
        "synthetic 512x512x200": in_child(synthetic_ct, work / "synthetic_0000.nii.gz"),
        ABDOMEN_128: in_child(
            repeated_abdomen_ct, work / "abdomen128_0000.nii.gz", (512, 512, 151), (0.8, 0.8, 2.5), 20
        ),
        ABDOMEN_160: in_child(
            repeated_abdomen_ct, work / "abdomen160_0000.nii.gz", (512, 512, 151), (0.8, 0.8, 2.5), 40
        ),
    }
    for case_id in args.cases:
        inputs[case_id] = DATA / cases_json[case_id]["image"]
    once = set()
    if args.large or args.huge:
        large = (512, 512, 1208), (0.8, 0.8, 0.8)
        inputs[LARGE] = in_child(synthetic_ct, work / "large_0000.nii.gz", *large)
        inputs[SPANNING] = in_child(repeated_abdomen_ct, work / "spanning_0000.nii.gz", *large)
        once |= {LARGE, SPANNING}
    if args.huge:
        inputs[HUGE] = in_child(repeated_abdomen_ct, work / "huge_0000.nii.gz", (512, 512, 2416), (0.8, 0.8, 0.8))
        once.add(HUGE)
    return inputs, once


ABDOMENS = (512, 512, 151), (0.8, 0.8, 2.5)
"""Size and spacing of the CTs of abdomens along z: from slice 20 of the repeated abdomen the original's localization
gives the SCN a 128 x 128 x 160 input, from slice 40 its largest, 160 x 128 x 160."""
ABDOMEN_128 = "512x512x151, an abdomen and a half"
ABDOMEN_160 = "512x512x151, two abdomens"
LARGE = "synthetic 512x512x1208, 0.8 mm"
SPANNING = "512x512x1208, 0.8 mm, abdomens along it"
HUGE = "512x512x2416, 0.8 mm, abdomens along it"


def print_inputs(first_run: tuple[float, float, dict], rows: list, splits: dict[str, list]) -> None:
    """Each input's lone and batch figures, with the memory model, and where a lone run's time and memory go."""
    print(
        f"\nprecision: {rows[0][3]['precision']}; first run on a machine (graphs traced into the cache): "
        f"{first_run[0]:.1f} s, peak {first_run[1]:.2f} GiB for the synthetic 512x512x200 CT"
    )
    print(
        "\ninput | loc / SCN input (z,y,x) | lone: seconds | lone: peak RSS | memory model | batch: peak RSS | "
        "memory model"
    )
    for name, seconds, peak, result, _, (lone_model, batch_model) in rows:
        network_sizes = " / ".join("x".join(map(str, size)) for size in result["sizes"])
        print(
            f"{name} | {network_sizes} | {seconds:.1f} s | {peak:.2f} GiB | "
            f"{lone_model:.2f} GiB ({100 * (lone_model / peak - 1):+.0f} %) | {result['peak_gb']:.2f} GiB | "
            f"{batch_model:.2f} GiB ({100 * (batch_model / result['peak_gb'] - 1):+.0f} %)"
        )
    for name, steps in splits.items():
        print(f"\nwhere a lone run of {name} goes: step | seconds | RSS after | peak within")
        for step, seconds, rss, peak in steps:
            print(f"{step} | {seconds:.2f} | {rss / 1024:.2f} GiB | {peak / 1024:.2f} GiB")
    print("\nbatch: medians of cases 2..n (s)")
    header = "input | read | localization | segmentation | write | total | first case | "
    print(header + "batch wall / case | peak RSS | I/O floor read + write")
    for name, _, _, result, (read, write), _ in rows:
        m = result["medians"]
        print(
            f"{name} | {m['read']:.2f} | {m['localization']:.2f} | {m['segmentation']:.2f} | "
            f"{m['write']:.2f} | {result['total']:.2f} | {result['first']:.2f} | "
            f"{result['wall'] / result['cases']:.2f} | {result['peak_gb']:.2f} GiB | {read:.2f} + {write:.2f}"
        )
    sys.stdout.flush()


def print_mixed(mixed: tuple[float, float]) -> None:
    """The peaks of a batch mixing the large CT with smaller ones and of a batch of the large one alone."""
    print(
        f"\nbatch of three 512x512x200 CTs and the 512x512x1208 one: peak {mixed[0]:.2f} GiB; "
        f"a batch of the 512x512x1208 CT alone: {mixed[1]:.2f} GiB",
        flush=True,
    )


def print_slab_sizes(sizes: dict[str, dict], rounds: int) -> None:
    """Memory, time and label differences per `--slab-memory` value."""
    print(f"\n--slab-memory on {ABDOMEN_160} (medians of {rounds} alternating rounds)")
    print("slab memory | lone: seconds | lone: peak RSS | batch: s per case | batch: peak RSS | label voxels != off")
    for budget, found in sizes.items():
        print(
            f"{budget} | {found['lone']:.1f} | {found['lone_peak']:.2f} GiB | {found['case']:.2f} | "
            f"{found['batch_peak']:.2f} GiB | {found['differing']}",
            flush=True,
        )


def print_baseline(baseline: dict, revision: str, rounds: int) -> None:
    """This package's batches against another revision's."""
    print(
        f"\nagainst {revision}, batches of 6 of {ABDOMEN_128}, {rounds} alternating rounds; "
        f"load average {min(baseline['loads']):.1f}-{max(baseline['loads']):.1f}"
    )
    for name in ("old", "new"):
        found = baseline[name]
        print(
            f"{name}: per case {found['case']:.2f} s (rounds: {', '.join(f'{c:.2f}' for c in found['cases'])}), "
            f"wall / case {found['wall']:.2f} s, peak {found['peak']:.2f} GiB"
        )
    print(f"labels: {baseline['differing']} voxels differ", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="models folder (default: a temporary one, see above)")
    parser.add_argument("--repeats", type=int, default=5, help="cases per batch and lone runs (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "gpu"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--cases", nargs="*", default=["ts_example_ct", "ts_example_ct_dicom"], help="shared case IDs")
    parser.add_argument("--large", action="store_true", help="also the 512 x 512 x 1208 CTs and a mixed batch")
    parser.add_argument("--huge", action="store_true", help="also the 512 x 512 x 2416 CT (implies --large)")
    parser.add_argument(
        "--slab-sizes",
        nargs="*",
        default=["off", "32", "64", "128", "256"],
        help="--slab-memory values compared on the two-abdomen CT (default: %(default)s; none: skip)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of comparisons (default: 3)")
    parser.add_argument("--baseline", help="a git revision whose package runs the same batches, alternately")
    parser.add_argument(
        "--comparisons-only", action="store_true", help="only the --slab-sizes and --baseline comparisons"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    extra = ["--precision", args.precision] + (["--device", args.device] if args.device else [])

    with tempfile.TemporaryDirectory(prefix="efficientscn-benchmark-") as temporary:
        work = Path(temporary)
        os.environ["EFFICIENTSCN_CACHE"] = str(work / "cache")  # empty: the first run is a machine's first
        models = args.models or temporary_models(work / "models")
        inputs, once = make_inputs(args, work)
        first_run = lone_run(inputs["synthetic 512x512x200"], models, work, extra)
        # a folder's graphs (TensorFlow's pool, deeper slabs) traced too, outside the batches' figures
        run_batch(inputs["synthetic 512x512x200"], models, 1, work, extra)
        rows, splits = [], {}
        for name, ct in {} if args.comparisons_only else inputs.items():
            logger.info("%s: lone runs, the start-up split, %d cases in one batch ...", name, args.repeats)
            lone = [lone_run(ct, models, work, extra) for _ in range(1 if name in once else args.repeats)]
            splits[name] = startup_split(ct, models, work, args.device or "", args.precision)
            result = run_batch(ct, models, 2 if name in once else args.repeats, work, extra)
            floor = in_child(io_floor, ct, 3, work)
            modelled = modelled_peak_gb(lone[0][2], ct)
            lone_figures = statistics.median(s for s, _, _ in lone), max(p for _, p, _ in lone)
            rows.append((name, *lone_figures, result, floor, modelled))
        if not args.comparisons_only:
            print_inputs(first_run, rows, splits)
            if args.large or args.huge:
                print_mixed(mixed_batch_peaks(inputs[LARGE], inputs["synthetic 512x512x200"], models, work, extra))
            largest = largest_scn_seconds(models, args.device or "cpu", args.precision)
            print(f"SCN alone at its largest input 160x128x160: {largest[0]:.2f} s, peak RSS {largest[1]:.2f} GiB")
        if args.slab_sizes:
            sizes = slab_sizes(inputs[ABDOMEN_160], models, work, args.slab_sizes, args.rounds, extra)
            print_slab_sizes(sizes, args.rounds)
        if args.baseline:
            baseline = against_baseline(inputs[ABDOMEN_128], models, work, args.baseline, args.rounds, extra)
            print_baseline(baseline, args.baseline, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
