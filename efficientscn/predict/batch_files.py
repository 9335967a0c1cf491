"""The files of a whole `predict` batch: the outputs' own (`statistics.csv`) and the report.

Each is written whatever became of the others, after the batch (also a stopped one); one that cannot be written is
named with the reason and makes the run's exit status non-zero. The report's folder is checked for room up front,
where the file system tells, so that a long batch does not end without its report.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from efficientscn.batch import BatchReport
from efficientscn.errors import InputError
from efficientscn.outputs.writers import CaseWriter, DoneCase
from efficientscn.predict.cases import Case, is_done
from efficientscn.predict.monitor import CaseMonitor, write_report

logger = logging.getLogger(__name__)

REPORT_BYTES = 64 * 1024
"""Room a report takes beside its cases: the run's facts, versions and models."""
REPORT_BYTES_PER_CASE = 8 * 1024
"""Room a report takes per case: a few hundred bytes of record, warnings and file names, with a wide margin."""


def check_report_room(path: Path, cases: int) -> None:
    """InputError naming the report before any work if its folder has less room than the report of `cases` cases
    needs; nothing where the file system does not tell."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    needed = REPORT_BYTES + REPORT_BYTES_PER_CASE * cases
    if free < needed:
        raise InputError(
            f"{path}: its folder has {free:,} bytes free, and the report of {cases} case(s) needs up to {needed:,}"
        )


def write_batch_files(
    report: BatchReport,
    output: Path,
    writers: Sequence[CaseWriter],
    cases: Sequence[Case],
    report_path: Path | None,
    run: dict,
    monitor: CaseMonitor,
) -> None:
    """The outputs' batch-level files from the cases that are done (their label is there), then the report; each
    one that cannot be written is logged and added to `report.file_errors`."""
    done = [DoneCase(case.id, case.source, case.output) for case in cases if is_done(case.output)]
    for writer in writers:
        try:
            writer.finish(output, done)
        except InputError as error:  # the report still follows
            _failed(report, str(error))
    if report_path is None:
        return
    run = {**run, "file_errors": list(report.file_errors)}  # those of the outputs' files, named in the report too
    try:
        write_report(report_path, run, monitor.records_list(), monitor.process_peak_mb())
    except OSError as error:
        _failed(report, f"{report_path}: the report not written: {error.strerror or error}")


def _failed(report: BatchReport, error: str) -> None:
    logger.error("%s", error)
    report.file_errors.append(error)
