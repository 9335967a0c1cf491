"""Shards: a batch split into parts that run as separate jobs (an array job of any scheduler), then merged.

`--shard I/N` takes every N-th case of the batch's sorted cases from the I-th on (0 <= I < N), as nnU-Net's
`-part_id/-num_parts`: the shards are disjoint, cover the batch, differ in size by one case at most, and a case added
after the last one leaves every earlier case in its shard. Each shard writes its own report, which records its place
in the batch; `merge_shard_reports` checks that the reports are the whole batch, once, and writes the batch's report
and `statistics.csv`, which a shard leaves alone (shards run at once and would replace each other's).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from efficientscn.atomic import write_text_atomic
from efficientscn.batch import BatchReport
from efficientscn.errors import InputError
from efficientscn.imaging.names import case_id
from efficientscn.outputs.writers import DoneCase, case_output, companion_writers
from efficientscn.predict.cases import is_done

logger = logging.getLogger(__name__)

T = TypeVar("T")

REPORTS_FOLDER = "reports"
"""Where a shard's report goes in the output folder when `--report` names none."""


@dataclass(frozen=True)
class Shard:
    """Part `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: the index runs from 0 to count - 1")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` as the command line takes it; ValueError naming the problem otherwise."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise ValueError(f"{text!r}: expected I/N, e.g. 0/4 for the first of four shards")
        index, count = int(match[1]), int(match[2])
        if count < 1 or index >= count:
            raise ValueError(f"{text}: the index runs from 0 to {max(count - 1, 0)} for {count} shard(s)")
        return cls(index, count)

    def select(self, items: Sequence[T]) -> list[T]:
        """This shard's items: every `count`-th from the `index`-th on."""
        return list(items[self.index :: self.count])

    def default_report(self, output: Path) -> Path:
        """The report of this shard when none is named: `<output>/reports/shard-<I>-of-<N>.json`."""
        return output / REPORTS_FOLDER / f"shard-{self.index}-of-{self.count}.json"


@dataclass
class MergedBatch:
    """The batch the shard reports make up, and what became of its cases."""

    report: BatchReport
    path: Path
    """The batch's report, as written."""


def merge_shard_reports(paths: Sequence[Path], output_report: Path | None = None) -> MergedBatch:
    """Check that the reports of `paths` are every shard of one batch, once, and write the batch's report (default:
    `batch.json` beside the first shard's) and, where the shards wrote per-case statistics, `statistics.csv` from
    every case that is done. InputError naming what is missing, doubled or unreadable."""
    if not paths:
        raise InputError("no shard report given")
    reports = [_read_report(path) for path in paths]
    shards = [report["shard"] for report in reports]
    count, batch = shards[0]["count"], shards[0]["cases_in_batch"]
    for path, shard in zip(paths, shards, strict=True):
        if (shard["count"], shard["cases_in_batch"], shard["output"]) != (count, batch, shards[0]["output"]):
            raise InputError(
                f"{path}: shard {shard['index']}/{shard['count']} of {shard['cases_in_batch']} cases into "
                f"{shard['output']}, another batch than {paths[0]} ({shards[0]['count']} shards of {batch} cases into "
                f"{shards[0]['output']})"
            )
    indices = [shard["index"] for shard in shards]
    missing = sorted(set(range(count)) - set(indices))
    doubled = sorted({index for index in indices if indices.count(index) > 1})
    if missing or doubled:
        problems = ([f"missing shard(s) {', '.join(map(str, missing))}"] if missing else []) + (
            [f"shard(s) {', '.join(map(str, doubled))} given more than once"] if doubled else []
        )
        raise InputError(f"{'; '.join(problems)} of the {count} shards of the batch")
    placed: dict[int, dict[str, Any]] = {}
    for path, report in zip(paths, reports, strict=True):
        index = report["shard"]["index"]
        for k, record in enumerate(report["cases"]):
            position = index + k * count  # the shard's k-th case is the batch's (index + k * count)-th
            if position in placed:
                raise InputError(f"{path}: its case {record['input']} is another shard's as well")
            placed[position] = record
    if sorted(placed) != list(range(batch)):
        raise InputError(f"the shard reports hold {len(placed)} cases, the batch {batch}: they are not of one run")
    records = [placed[position] for position in range(batch)]
    output = Path(shards[0]["output"])
    merged = BatchReport()
    for record in records:
        name = Path(record["input"]).name
        if record["status"] == "done":
            merged.done.append(name)
        elif record["status"] == "skipped":
            merged.skipped.append(name)
        elif record["status"] == "failed":
            merged.failed[name] = record["error"] or "failed"
        else:
            merged.not_done.append(name)
    _write_batch_statistics(reports[0]["outputs"], output, records, merged)
    path = output_report or Path(paths[0]).parent / "batch.json"
    text = json.dumps(_merged_report(paths, reports, records, merged), indent=1) + "\n"
    try:
        write_text_atomic(path, text, overwrite=True)
    except OSError as error:
        raise InputError(f"{path}: the batch's report not written: {error.strerror or error}") from error
    logger.info("wrote %s: %d shards, %d cases", path, count, batch)
    return MergedBatch(merged, path)


def _read_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable report ({error})") from error
    if not isinstance(report, dict) or not isinstance(report.get("shard"), dict):
        raise InputError(f"{path}: not the report of a shard (predict --shard I/N writes one)")
    return report


def _write_batch_statistics(
    outputs: dict[str, Any], output: Path, records: list[dict[str, Any]], merged: BatchReport
) -> None:
    """The outputs' files of the whole batch (`statistics.csv`) from every case whose label is there."""
    label = case_output(outputs["label_format"])
    done = [
        DoneCase(case_id(Path(record["input"])), Path(record["input"]), Path(record["output"]))
        for record in records
        if is_done(Path(record["output"]))
    ]
    for writer in [*companion_writers(tuple(outputs["companions"]), label), label]:
        try:
            writer.finish(output, done)
        except InputError as error:
            logger.error("%s", error)
            merged.file_errors.append(str(error))


SHARED_FACTS = ("versions", "device", "precision", "models")
"""The run facts the batch's report gives once where every shard agrees (each shard's are under `shards`)."""


def _merged_report(
    paths: Sequence[Path], reports: list[dict[str, Any]], records: list[dict[str, Any]], merged: BatchReport
) -> dict[str, Any]:
    shared = {key: reports[0].get(key) for key in SHARED_FACTS}
    for key in SHARED_FACTS:
        if any(report.get(key) != shared[key] for report in reports):
            shared[key] = None  # they differ: see each shard
    by_index = sorted(zip(paths, reports, strict=True), key=lambda pair: pair[1]["shard"]["index"])
    return {
        **shared,
        "outputs": reports[0]["outputs"],
        "file_errors": merged.file_errors,
        "peak_rss_mb": max((report.get("peak_rss_mb") or 0.0) for report in reports),
        "shards": [
            {
                "report": str(path),
                **report["shard"],
                **{key: report.get(key) for key in (*SHARED_FACTS, "peak_rss_mb", "file_errors", "cluster")},
            }
            for path, report in by_index
        ],
        "cases": records,
    }
