"""Inference speed and memory: per-case seconds per stage and peak RSS of `efficientscn predict`, and the I/O floor.

Each input is segmented `--repeats` times in one `efficientscn predict` process (a batch of copies, as a user's
folder of CTs), so the figures are per case in a running batch (the models load and trace before the first case,
while it is read). Inputs: a synthetic 512 x 512 x 200 CT (a real abdomen stretched along z and resampled to
0.8 x 0.8 x 2 mm) and real CTs of ../shared/data. The I/O floor is the time to read the same CT (onto the
canonical grid) and to write a label of its size. The SCN alone at its largest input (160 x 128 x 160) is timed
as well, since the organ box of a CT decides the size it runs at.

    python benchmarks/inference.py [--models DIR] [--repeats 5] [--device cpu] [--precision auto]

Without --models it builds a temporary models folder: the original's released localization weights in our network
(the boxes are the real ones) and an untrained SCN of the paper's size (its labels are meaningless, its speed is not).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
STAGES = ("read", "localization", "segmentation", "write")
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
import json, resource, statistics, time
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
print(json.dumps([statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    seconds, peak_gb = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, peak_gb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="models folder (default: a temporary one, see above)")
    parser.add_argument("--repeats", type=int, default=5, help="cases per batch (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "gpu"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--cases", nargs="*", default=["ts_example_ct", "ts_example_ct_dicom"], help="shared case IDs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    extra = ["--precision", args.precision] + (["--device", args.device] if args.device else [])

    cases_json = {case["id"]: case for case in json.loads((SHARED / "data" / "cases.json").read_text())}
    with tempfile.TemporaryDirectory(prefix="efficientscn-benchmark-") as temporary:
        work = Path(temporary)
        models = args.models or temporary_models(work / "models")
        inputs = {"synthetic 512x512x200": synthetic_ct(work / "synthetic_0000.nii.gz")}
        for case_id in args.cases:
            image = SHARED / "data" / cases_json[case_id]["image"]
            inputs[case_id] = image
        rows = []
        for name, ct in inputs.items():
            logger.info("%s: %d cases in one batch ...", name, args.repeats)
            result = run_batch(ct, models, args.repeats, work, extra)
            floor = io_floor(ct, 3, work)
            rows.append((name, result, floor))
        largest = largest_scn_seconds(models, args.device or "cpu", args.precision)

    print(f"\nefficientscn predict, {args.repeats} cases per batch; medians of cases 2..{args.repeats} (s)")
    header = "input | loc / seg input (z,y,x) | read | localization | segmentation | write | total | first case | "
    print(header + "batch wall / case | peak RSS | I/O floor read + write")
    for name, result, (read, write) in rows:
        m = result["medians"]
        sizes = "x".join(map(str, result["sizes"][0])) + " / " + "x".join(map(str, result["sizes"][1]))
        print(
            f"{name} | {sizes} | {m['read']:.2f} | {m['localization']:.2f} | {m['segmentation']:.2f} | "
            f"{m['write']:.2f} | {result['total']:.2f} | {result['first']:.2f} | "
            f"{result['wall'] / args.repeats:.2f} | {result['peak_rss_mb'] / 1024:.2f} GB | {read:.2f} + {write:.2f}"
        )
    print(f"precision: {rows[0][1]['precision']}")
    print(f"SCN alone at its largest input 160x128x160: {largest[0]:.2f} s, peak RSS {largest[1]:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
