"""run_batch: one piece of work per case, a bad case is recorded with its reason and the others go on."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

import pytest

from efficientscn.batch import BatchReport, Outcome, run_batch
from efficientscn.cli import finish_batch
from efficientscn.errors import InputError
from efficientscn.stopping import stop_on_signals


def _work(
    failures: dict[str, BaseException] | None = None, skip: frozenset[str] = frozenset()
) -> tuple[Callable[[str], Outcome], list[str]]:
    """A work function that records the cases it is called on, raises the given error for a case, skips others."""
    failures = failures or {}
    visited: list[str] = []

    def work(case: str) -> Outcome:
        visited.append(case)
        if case in failures:
            raise failures[case]
        return "skipped" if case in skip else "done"

    return work, visited


def _run(items: list[str], work: Callable[[str], Outcome], *, progress: bool = False) -> BatchReport:
    return run_batch(items, work, name_of=str.upper, description="test batch", progress=progress)


def test_every_case_is_worked_on_in_order_and_reported_done_by_its_name() -> None:
    work, visited = _work()
    report = _run(["a", "b", "c"], work)
    assert visited == ["a", "b", "c"]
    assert report.done == ["A", "B", "C"]  # named by name_of, not by the item itself
    assert report.skipped == []
    assert report.failed == {}
    assert report.ok


def test_a_case_whose_work_says_skipped_is_reported_skipped_not_done() -> None:
    work, _ = _work(skip=frozenset({"b"}))
    report = _run(["a", "b", "c"], work)
    assert report.done == ["A", "C"]
    assert report.skipped == ["B"]
    assert report.ok


def test_a_failing_case_is_recorded_with_its_reason_and_the_batch_goes_on() -> None:
    work, visited = _work({"b": InputError("/data/b.nii.gz: truncated NIfTI file")})
    report = _run(["a", "b", "c"], work)
    assert visited == ["a", "b", "c"]
    assert report.done == ["A", "C"]
    assert report.failed == {"B": "/data/b.nii.gz: truncated NIfTI file"}
    assert not report.ok


def test_an_os_error_is_recorded_with_its_message_like_an_input_error() -> None:
    work, visited = _work({"a": PermissionError(13, "Permission denied", "/out/a.nii.gz")})
    report = _run(["a", "b"], work)
    assert visited == ["a", "b"]
    assert report.done == ["B"]
    assert "Permission denied" in report.failed["A"]
    assert "/out/a.nii.gz" in report.failed["A"]


@pytest.mark.parametrize(
    "error",
    [InputError("/data/b.nii.gz: not a NIfTI file"), FileNotFoundError(2, "No such file", "/data/b.nii.gz")],
    ids=["InputError", "OSError"],
)
def test_input_and_disk_errors_are_logged_as_one_line_without_a_traceback(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad input or a full disk is the user's to fix; a traceback would only hide the file name."""
    work, _ = _work({"b": error})
    with caplog.at_level(logging.ERROR, logger="efficientscn.batch"):
        _run(["a", "b"], work)
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [(logging.ERROR, f"B: {error}")]
    assert caplog.records[0].exc_info is None


def test_an_unexpected_exception_is_recorded_with_its_type_logged_with_its_traceback_and_the_batch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain ValueError (not an InputError) points at a bug, so its traceback is kept."""
    work, visited = _work({"a": ZeroDivisionError("division by zero"), "b": ValueError("shape mismatch")})
    with caplog.at_level(logging.ERROR, logger="efficientscn.batch"):
        report = _run(["a", "b", "c"], work)
    assert visited == ["a", "b", "c"]
    assert report.done == ["C"]
    assert report.failed == {"A": "ZeroDivisionError: division by zero", "B": "ValueError: shape mismatch"}
    assert [record.getMessage() for record in caplog.records] == ["A: unexpected error", "B: unexpected error"]
    assert all(record.exc_info is not None for record in caplog.records)
    assert "shape mismatch" in caplog.text  # the traceback, with the error, reaches the log


def test_a_keyboard_interrupt_stops_the_batch_at_once() -> None:
    work, visited = _work({"b": KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        _run(["a", "b", "c"], work)
    assert visited == ["a", "b"]


def test_an_empty_batch_is_ok_and_counts_nothing() -> None:
    work, visited = _work()
    report = _run([], work)
    assert visited == []
    assert report.ok
    assert report.summary() == "0 done, 0 failed"


def test_the_report_is_ok_when_cases_are_skipped_but_not_when_one_failed() -> None:
    assert BatchReport(done=["a"], skipped=["b"]).ok
    assert not BatchReport(done=["a"], failed={"b": "reason"}).ok


def test_the_summary_counts_done_and_failed_cases() -> None:
    work, _ = _work({"b": InputError("b: bad"), "d": RuntimeError("bug")})
    assert _run(["a", "b", "c", "d", "e"], work).summary() == "3 done, 2 failed"


def test_the_summary_mentions_skipped_cases_only_when_there_are_some() -> None:
    work, _ = _work({"c": InputError("c: bad")}, skip=frozenset({"a", "b"}))
    assert _run(["a", "b", "c", "d"], work).summary() == "1 done, 2 skipped, 1 failed"
    assert "skipped" not in BatchReport(done=["a"]).summary()


def test_the_progress_bar_shows_the_description_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    work, _ = _work()
    _run(["a", "b"], work, progress=True)
    captured = capsys.readouterr()
    assert "test batch" in captured.err
    assert "2/2" in captured.err
    assert captured.out == ""


def test_the_progress_bar_can_be_switched_off(capsys: pytest.CaptureFixture[str]) -> None:
    work, _ = _work()
    report = _run(["a", "b"], work, progress=False)
    assert report.done == ["A", "B"]
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_batch_after_the_case_in_hand_and_lists_the_rest(number: int) -> None:
    """The case that received it finishes (its write is atomic); the next ones are not started."""
    visited = []

    def work(case: str) -> Outcome:
        visited.append(case)
        if case == "b":
            os.kill(os.getpid(), number)  # arrives while "b" is in hand
        return "done"

    with stop_on_signals() as stop:
        report = run_batch(["a", "b", "c", "d"], work, name_of=str, description="test", progress=False, stop=stop)
    assert visited == ["a", "b"] and report.done == ["a", "b"] and report.not_done == ["c", "d"]
    assert report.stop_signal == number and not report.ok
    assert report.summary() == "2 done, 0 failed, 2 not done (stopped)"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers are restored on leaving
    assert finish_batch(report, "test") == 128 + number


def test_a_second_signal_interrupts_at_once() -> None:
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_signal_during_the_last_case_still_gives_the_signals_exit_status() -> None:
    def work(case: str) -> Outcome:
        if case == "b":
            os.kill(os.getpid(), signal.SIGTERM)
        return "done"

    with stop_on_signals() as stop:
        report = run_batch(["a", "b"], work, name_of=str, description="test", progress=False, stop=stop)
    assert report.done == ["a", "b"] and report.not_done == [] and report.stop_signal == signal.SIGTERM
    assert finish_batch(report, "test") == 143


def test_log_lines_never_share_a_line_with_the_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    """A message logged while the bar shows is written on a line of its own, and the bar is drawn again below it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:

        def work(item: str) -> Outcome:
            logging.getLogger("efficientscn.test").warning("message about %s", item)
            return "done"

        run_batch(["a", "b", "c"], work, name_of=str, description="batch", progress=True)
    finally:
        root.removeHandler(handler)
    lines = capsys.readouterr().err.split("\n")
    written = [line.split("\r")[-1] for line in lines if "message about" in line]
    assert written == ["message about a", "message about b", "message about c"]
