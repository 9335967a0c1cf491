"""The files of a whole batch: each written whatever became of the others, a failure named and counted."""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from efficientscn.batch import BatchReport
from efficientscn.errors import InputError
from efficientscn.outputs.writers import CaseWriter, DoneCase
from efficientscn.predict import batch_files
from efficientscn.predict.batch_files import check_report_room, write_batch_files
from efficientscn.predict.cases import Case
from efficientscn.predict.monitor import CaseMonitor


class _TableWriter(CaseWriter):
    """A companion with a batch-level file that fails as told."""

    name = "table"

    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.done = error, None

    def finish(self, output: Path, done: list[DoneCase]) -> list[Path]:
        self.done = [case.case_id for case in done]
        if self.error is not None:
            raise self.error
        return []


def _cases(tmp_path: Path) -> list[Case]:
    cases = [Case(tmp_path / "in" / f"{name}.nii.gz", tmp_path / "out" / f"{name}.nii.gz") for name in "ab"]
    (tmp_path / "out").mkdir()
    cases[0].output.write_bytes(b"a label")  # done; b is not
    return cases


def test_a_batch_file_that_fails_is_named_and_counted_and_the_report_still_written(tmp_path: Path) -> None:
    cases, report = _cases(tmp_path), BatchReport()
    failing, other = _TableWriter(InputError("/out/statistics.csv: not written: Is a directory")), _TableWriter()
    path = tmp_path / "report.json"
    write_batch_files(
        report, tmp_path / "out", [failing, other], cases, path, {"device": "cpu"}, CaseMonitor(cases, "cpu")
    )
    assert failing.done == other.done == ["a"]  # the done cases only, to every writer
    assert report.file_errors == ["/out/statistics.csv: not written: Is a directory"] and not report.ok
    written = json.loads(path.read_text())
    assert written["file_errors"] == report.file_errors and [c["input"] for c in written["cases"]] == [
        str(case.source) for case in cases
    ]


def test_a_report_that_cannot_be_written_is_named_and_makes_the_run_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*arguments: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_files, "write_report", full_disk)
    cases, report, path = _cases(tmp_path), BatchReport(), tmp_path / "report.json"
    write_batch_files(report, tmp_path / "out", [], cases, path, {}, CaseMonitor(cases, "cpu"))
    assert report.file_errors == [f"{path}: the report not written: No space left on device"] and not report.ok


def test_a_report_folder_without_room_for_the_report_stops_the_batch_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    path = tmp_path / "report.json"
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 100_000, 100_000))
    check_report_room(path, cases=3)  # 88 KB needed
    with pytest.raises(InputError, match=re.escape(f"{path}: its folder has 100,000 bytes free")):
        check_report_room(path, cases=10)

    def unknown(folder: Path) -> None:
        raise OSError(errno.ENOSYS, "not supported")

    monkeypatch.setattr(shutil, "disk_usage", unknown)
    check_report_room(path, cases=10**6)  # where the file system does not tell, nothing is refused
