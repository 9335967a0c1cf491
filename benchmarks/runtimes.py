"""TensorFlow against ONNX Runtime and OpenVINO on the two networks: start-up, speed and memory, side by side.

    python -m venv /tmp/rt-venv && /tmp/rt-venv/bin/pip install -e ".[onnx]"    # not the project's own .venv
    /tmp/rt-venv/bin/pip install openvino                                       # the one package not in the extra
    /tmp/rt-venv/bin/python benchmarks/runtimes.py [--models submitted_saved_models] [--repeats 3] [--work DIR]

Each network of the models folder runs at the input a 512 x 512 x 200 CT gives it (localization 80 x 80 x 80, the
SCN 96 x 96 x 160, zyx) in each runtime, every pair in a fresh process so that import and load seconds and peak
RSS are the runtime's own: TensorFlow bfloat16 and float32 (`load_network`, with the allocator and graph
settings of `efficientscn predict` on a folder of CTs), ONNX Runtime float32, and OpenVINO float32 and bfloat16 (its
INFERENCE_PRECISION_HINT; skipped on a CPU without bfloat16).
A runtime whose package is missing is skipped, with the reason.

The ONNX file of each network is converted once, before the timed runs, in a process of its own, by the package's
`efficientscn.convert.onnx.export_network` (what `efficientscn export-onnx` runs; its docstring says how: the
SavedModel's serving signature, computed in float32, through tf2onnx at opset 17, with the interface of the
SavedModel: `image` float16 [N, 1, D, H, W] in, `output_0` out). OpenVINO reads the same ONNX file. That process also
loads both TensorFlow precisions once: their load seconds there are the cold ones (tracing); the timed processes
then load as a user's later runs do, from the package's graph cache where it keeps one (`$EFFICIENTSCN_CACHE`,
set to `<work>/cache`, emptied at the start). ONNX files in `--work` are reused.

The input is a seeded phantom CT (`efficientscn.phantom`, HU / 2048 clamped, float16); agreement is with TensorFlow
float32 on it: the fraction of equal mask voxels (localization), the largest probability difference and the
fraction of equal argmax labels (SCN). Memory is the process's peak RSS after loading and at the end, read as
VmHWM (ru_maxrss may carry the parent's peak over fork and exec).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("localization", "segmentation")
INPUT_ZYX = {"localization": (80, 80, 80), "segmentation": (96, 96, 160)}
"""The networks' inputs for a 512 x 512 x 200 CT of 0.8 x 0.8 x 2 mm."""
SPACING_MM = {"localization": 6.0, "segmentation": 2.0}
PHANTOM_CENTRE_MM = {"localization": (0.0, 0.0, 0.0), "segmentation": (0.0, 25.0, 20.0)}
"""Where each input is centred on the phantom (xyz mm): the whole body, the organ box."""
OPENVINO_TYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
REFERENCE = "tensorflow-float32"

logger = logging.getLogger("runtimes")


@dataclass(frozen=True)
class Runtime:
    """A runtime to time: its name, the package it needs and the precision asked of it."""

    name: str
    package: str
    precision: str
    onnx: bool


RUNTIMES = (
    Runtime(REFERENCE, "tensorflow", "float32", onnx=False),  # first: the others are compared with its output
    Runtime("tensorflow-bfloat16", "tensorflow", "bfloat16", onnx=False),
    Runtime("onnxruntime-float32", "onnxruntime", "float32", onnx=True),
    Runtime("openvino-float32", "openvino", "f32", onnx=True),
    Runtime("openvino-bfloat16", "openvino", "bf16", onnx=True),
)


def phantom_input(stage: str) -> np.ndarray:
    """The seeded phantom CT on the stage's input grid: HU / 2048 clamped to [-1, 1], float16 [1, 1, D, H, W]."""
    import SimpleITK as sitk

    from efficientscn.phantom import PhantomGrid, make_phantom

    size_zyx = INPUT_ZYX[stage]
    grid = PhantomGrid(size_zyx[::-1], (SPACING_MM[stage],) * 3, centre_mm=PHANTOM_CENTRE_MM[stage])
    ct, _ = make_phantom(grid, seed=0)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    return np.clip(hu / 2048.0, -1.0, 1.0).astype(np.float16)[np.newaxis, np.newaxis]


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB: VmHWM, which (unlike ru_maxrss after a fork and exec)
    counts none of the parent's; ru_maxrss where /proc is missing."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def prepare(models: Path, stage: str, onnx_path: Path) -> dict[str, Any]:
    """Cold TensorFlow loads of both precisions (warming the graph cache) and the ONNX file if it is missing."""
    from efficientscn.convert.onnx import export_network
    from efficientscn.errors import InputError
    from efficientscn.infer.models import load_network

    record: dict[str, Any] = {}
    for precision in ("float32", "bfloat16"):
        start = time.perf_counter()
        load_network(models / stage, stage, "cpu", precision)  # type: ignore[arg-type]
        record[f"cold_load_{precision}"] = time.perf_counter() - start
    if onnx_path.is_file():
        logger.info("%s: kept from an earlier run", onnx_path)
        return record
    start = time.perf_counter()
    try:
        export_network(models / stage, stage, onnx_path)  # type: ignore[arg-type]
    except InputError as error:  # tf2onnx or onnx missing, or not our export: the ONNX runtimes are skipped
        record["onnx_error"] = str(error)
        return record
    except Exception as error:  # any failure of the converter: the ONNX runtimes are skipped
        record["onnx_error"] = f"tf2onnx failed: {type(error).__name__}: {error}"
        return record
    record["conversion_seconds"] = time.perf_counter() - start  # loading the SavedModel, converting, writing
    return record


def cached_files() -> set[Path]:
    """The files of the package's cache: a load that adds one traced its graph (the package changed mid-run)."""
    folder = os.environ.get("EFFICIENTSCN_CACHE")
    return {path for path in Path(folder).rglob("*") if path.is_file()} if folder else set()


class Skip(Exception):
    """The runtime cannot run here; the message says why."""


def load_runtime(runtime: Runtime, models: Path, stage: str, onnx_path: Path) -> tuple[Callable, str]:
    """Import and load one runtime's network; (call on a float16 numpy image -> numpy output, precision used)."""
    if runtime.package == "tensorflow":
        import tensorflow as tf

        from efficientscn.infer.models import load_network

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})  # as predict runs it
        network = load_network(models / stage, stage, "cpu", runtime.precision)  # type: ignore[arg-type]
        return (lambda image: network.run(tf.constant(image)).numpy()), network.precision
    if runtime.package == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda image: session.run(None, {name: image})[0]), "float32"
    import openvino as ov

    core = ov.Core()
    if runtime.precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise Skip("this CPU has no bfloat16 for OpenVINO (OPTIMIZATION_CAPABILITIES lacks BF16)")
    compiled = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": runtime.precision})
    request = compiled.create_infer_request()
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16"
    return (lambda image: request.infer({0: image})[0]), OPENVINO_TYPES.get(used, used)


def measure(runtime: Runtime, models: Path, stage: str, work: Path, repeats: int) -> dict[str, Any]:
    """One runtime on one network in this (fresh) process: seconds of each step, memory; its output saved."""
    image = np.load(work / f"{stage}-input.npy")
    if runtime.package == "tensorflow":  # TensorFlow's allocator as predict sets it for a batch: its pool
        from efficientscn.infer.runtime import prepare_environment

        prepare_environment(lone_ct=False)
    start = time.perf_counter()
    importlib.import_module(runtime.package)
    if runtime.package == "tensorflow":
        importlib.import_module("efficientscn.infer.models")
    record: dict[str, Any] = {"import": time.perf_counter() - start}
    cached = cached_files()
    start = time.perf_counter()
    try:
        call, record["precision"] = load_runtime(runtime, models, stage, work / f"{stage}.onnx")
    except Skip as skip:
        return {"skipped": str(skip)}
    record["load"] = time.perf_counter() - start
    record["traced"] = cached_files() != cached
    record["rss_after_load"] = peak_rss_mib()
    start = time.perf_counter()
    output = call(image)
    record["first_call"] = time.perf_counter() - start
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = call(image)
        seconds.append(time.perf_counter() - start)
    record["median_call"] = statistics.median(seconds)
    record["peak_rss"] = peak_rss_mib()
    np.save(work / f"{stage}-{runtime.name}.npy", np.asarray(output))
    return record


def agreement(stage: str, output: np.ndarray, reference: np.ndarray) -> str:
    """How far an output is from TensorFlow float32's: equal mask voxels, or probability and argmax differences."""
    if output.shape != reference.shape:
        return f"shape {output.shape} vs {reference.shape}"
    if stage == "localization":
        return f"mask {np.mean(output.astype(bool) == reference.astype(bool)):.4%} equal"
    difference = np.abs(output.astype(np.float32) - reference.astype(np.float32)).max()
    equal = np.mean(np.argmax(output, axis=1) == np.argmax(reference, axis=1))
    return f"max abs prob. diff. {difference:.4f}, argmax {equal:.4%} equal"


def run_child(arguments: list[str], work: Path, log_name: str, environment: dict[str, str]) -> dict[str, Any]:
    """This script in a fresh process with `arguments`: its JSON record, or {"error": ...} with its log's tail."""
    log = work / f"{log_name}.log"
    result = work / f"{log_name}.json"
    result.unlink(missing_ok=True)
    with log.open("w") as stream:
        done = subprocess.run(
            [sys.executable, __file__, *arguments, "--result", str(result)], stdout=stream, stderr=stream,
            env=environment, check=False,
        )  # fmt: skip
    if done.returncode != 0 or not result.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
    return json.loads(result.read_text())


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, one row per network and runtime."""
    header = [
        "network", "runtime", "precision", "import s", "load s", "first call s", "median call s",
        "RSS after load MiB", "peak RSS MiB", "agreement with TF float32",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        record = row["record"]
        if "skipped" in record or "error" in record:
            cells = [row["stage"], row["runtime"], "-", *["-"] * 6, record.get("skipped") or record["error"]]
        else:
            cells = [
                row["stage"], row["runtime"], record["precision"], f"{record['import']:.2f}",
                f"{record['load']:.2f}" + (" (traced)" if record["traced"] else ""),
                f"{record['first_call']:.2f}", f"{record['median_call']:.2f}", f"{record['rss_after_load']:.0f}",
                f"{record['peak_rss']:.0f}", row["agreement"],
            ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def benchmark(models: Path, work: Path, repeats: int, environment: dict[str, str]) -> None:
    """Prepare each network, time every runtime on it in a fresh process, and print the table."""
    rows: list[dict[str, Any]] = []
    notes = []
    for stage in STAGES:
        np.save(work / f"{stage}-input.npy", phantom_input(stage))
        logger.info("%s: converting to ONNX and loading TensorFlow cold", stage)
        prepared = run_child(["--prepare", stage, "--models", str(models), "--work", str(work)], work,
                             f"{stage}-prepare", environment)  # fmt: skip
        notes.append(f"{stage}: " + ", ".join(
            f"{key.replace('_', ' ')} {value:.1f} s" if isinstance(value, float) else f"{key}: {value}"
            for key, value in prepared.items()
        ))  # fmt: skip
        logger.info(notes[-1])
        reference = None
        for runtime in RUNTIMES:
            if importlib.util.find_spec(runtime.package) is None:
                record: dict[str, Any] = {"skipped": f"{runtime.package} is not installed"}
            elif runtime.onnx and not (work / f"{stage}.onnx").is_file():
                record = {"skipped": f"no ONNX file ({prepared.get('onnx_error', 'conversion failed')})"}
            else:
                logger.info("%s: timing %s", stage, runtime.name)
                arguments = ["--measure", runtime.name, stage, "--models", str(models), "--work", str(work)]
                record = run_child([*arguments, "--repeats", str(repeats)], work, f"{stage}-{runtime.name}",
                                   environment)  # fmt: skip
            row = {"stage": stage, "runtime": runtime.name, "record": record, "agreement": "-"}
            output_path = work / f"{stage}-{runtime.name}.npy"
            if "precision" in record:
                output = np.load(output_path)
                if runtime.name == REFERENCE:
                    reference, row["agreement"] = output, "(reference)"
                elif reference is not None:
                    row["agreement"] = agreement(stage, output, reference)
                output_path.unlink()
            logger.info("%s %s: %s %s", stage, runtime.name, record, row["agreement"])
            rows.append(row)
    sizes = ", ".join(f"{stage} {' x '.join(map(str, INPUT_ZYX[stage]))}" for stage in STAGES)
    print(f"\n{os.cpu_count()} CPUs; inputs (zyx) {sizes}; median of {repeats} calls after the first; a fresh process")
    print("per row (peak RSS: its VmHWM); (traced): this load found no cached graph, as the package changed mid-run\n")
    print(markdown_table(rows))
    print("\nOne-off (preparation process): " + "; ".join(notes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "submitted_saved_models")
    parser.add_argument("--repeats", type=int, default=3, help="calls timed after the first (default 3)")
    parser.add_argument("--work", type=Path, help="folder of ONNX files, logs, graph cache (default: temporary)")
    parser.add_argument("--prepare", metavar="STAGE", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("RUNTIME", "STAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    models = args.models.resolve()
    if args.prepare:
        args.result.write_text(json.dumps(prepare(models, args.prepare, args.work / f"{args.prepare}.onnx")))
        return 0
    if args.measure:
        runtime = next(runtime for runtime in RUNTIMES if runtime.name == args.measure[0])
        args.result.write_text(json.dumps(measure(runtime, models, args.measure[1], args.work, args.repeats)))
        return 0
    with tempfile.TemporaryDirectory(prefix="efficientscn-runtimes-") as temporary:
        work = (args.work or Path(temporary)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)  # fresh: the preparation's TensorFlow loads are cold ones
        environment = {**os.environ, "EFFICIENTSCN_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
        benchmark(models, work, args.repeats, environment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
