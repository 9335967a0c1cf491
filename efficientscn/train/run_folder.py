"""Run folders: `<output>/<stage>/cv<k>/<timestamp>/` with the effective configuration, logs and checkpoints.

A run folder holds `config.json` (everything needed to rebuild the network and continue), `output.log`,
`train.csv`, `test.csv`, `tensorboard/`, `weights/ckpt-<iteration>` and `test/iter_<iteration>/`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from efficientscn.atomic import write_text_atomic
from efficientscn.errors import InputError

CONFIG_NAME = "config.json"
WEIGHTS_DIR = "weights"
CHECKPOINT_PREFIX = "ckpt"


def stage_folder(output: str | Path, stage: str, cv: int) -> Path:
    """Where the runs of one stage and fold live."""
    return Path(output) / stage / f"cv{cv}"


def new_run_folder(output: str | Path, stage: str, cv: int) -> Path:
    """A fresh timestamped run folder (a suffix keeps two runs started in the same second apart)."""
    parent = stage_folder(output, stage, cv)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(1000):
        folder = parent / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"{parent}: could not create a new run folder")


def checkpoint_path(run: str | Path, iteration: int) -> Path:
    """The checkpoint prefix of `iteration` in a run folder (TensorFlow appends .index / .data-*)."""
    return Path(run) / WEIGHTS_DIR / f"{CHECKPOINT_PREFIX}-{iteration}"


def checkpoint_iterations(run: str | Path) -> list[int]:
    """The iterations that have a complete checkpoint in a run folder, ascending."""
    found = []
    for index in (Path(run) / WEIGHTS_DIR).glob(f"{CHECKPOINT_PREFIX}-*.index"):
        number = index.name[len(CHECKPOINT_PREFIX) + 1 : -len(".index")]
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


def latest_resumable_run(output: str | Path, stage: str, cv: int) -> Path:
    """The newest run folder of a stage and fold that has a checkpoint, for `--resume`."""
    parent = stage_folder(output, stage, cv)
    runs = sorted(p for p in parent.glob("*") if p.is_dir() and checkpoint_iterations(p))
    if not runs:
        raise InputError(f"{parent}: no run with a checkpoint to resume")
    return runs[-1]


def write_config(run: Path, config: Mapping[str, Any]) -> Path:
    """Save the effective configuration of a run as JSON (replacing an older one on resume)."""
    return write_text_atomic(run / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n", overwrite=True)


def read_config(run: str | Path) -> dict[str, Any]:
    """The configuration a run was started with."""
    path = Path(run) / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"{path}: missing; is {run} a run folder?")
    return json.loads(path.read_text())


@contextmanager
def log_to_file(run: Path) -> Iterator[None]:
    """Copy the package's log messages into `<run>/output.log` for the duration of the block."""
    handler = logging.FileHandler(run / "output.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("efficientscn")
    package_logger.addHandler(handler)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        handler.close()


class CsvLog:
    """A CSV file of rows keyed by iteration; on resume, rows past the restored iteration are dropped."""

    def __init__(self, path: Path, fields: Sequence[str], resume_from: int | None = None) -> None:
        self.path, self.fields = path, ["iteration", *fields]
        kept: list[dict[str, str]] = []
        if resume_from is not None and path.is_file():
            with path.open(newline="") as file:
                kept = [row for row in csv.DictReader(file) if int(row["iteration"]) <= resume_from]
        text = io.StringIO()
        writer = csv.DictWriter(text, self.fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        write_text_atomic(path, text.getvalue(), overwrite=True)  # a kill now keeps the old log whole

    def append(self, iteration: int, values: Mapping[str, float]) -> None:
        """Write one row (missing fields stay empty; NaN is written as "nan")."""
        row = {"iteration": iteration, **{k: _format(v) for k, v in values.items()}}
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, self.fields, extrasaction="ignore", lineterminator="\n").writerow(row)


def _format(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"
