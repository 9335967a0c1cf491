"""Run one piece of work per case, so that a bad case is reported and the others go on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from efficientscn.errors import InputError
from efficientscn.stopping import StopRequest

logger = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = Literal["done", "skipped"]


@dataclass
class BatchReport:
    """What happened to each case of a batch, by case name."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_done: list[str] = field(default_factory=list)
    """Cases left when the batch was asked to stop."""
    stop_signal: int | None = None
    """The signal that stopped the batch, if one did."""
    file_errors: list[str] = field(default_factory=list)
    """Files of the whole batch (a report, a table of all cases) that could not be written, each with the reason."""

    @property
    def ok(self) -> bool:
        """True when no case failed, every file of the batch was written and the batch ran to its end."""
        return not self.failed and not self.file_errors and self.stop_signal is None

    def summary(self) -> str:
        """One line: how many cases were done, skipped, failed and (if stopped) not done, and files not written."""
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        stopped = f", {len(self.not_done)} not done (stopped)" if self.stop_signal is not None else ""
        files = f", {len(self.file_errors)} batch file(s) not written" if self.file_errors else ""
        return f"{len(self.done)} done{skipped}, {len(self.failed)} failed{stopped}{files}"


def run_batch(
    items: Sequence[T],
    work: Callable[[T], Outcome],
    *,
    name_of: Callable[[T], str],
    description: str,
    progress: bool = True,
    stop: StopRequest | None = None,
) -> BatchReport:
    """Call `work` on every item in order, with a progress bar; a failing item is logged and recorded, not raised.

    `InputError` and `OSError` are logged as one line (their messages name the file); any other exception is
    logged with its traceback, since it points at a bug rather than at the input or the disk. When `stop` is
    requested (a signal), the items not yet started are left and listed as not done. KeyboardInterrupt stops the
    batch at once.
    """
    report = BatchReport()
    with logging_redirect_tqdm() if progress else contextlib.nullcontext():  # log lines above the bar, not in it
        _run_items(items, work, name_of, tqdm(items, desc=description, unit="case", disable=not progress), report, stop)
    if stop is not None and stop.requested:  # also when it came during the last case: the exit status says so
        report.stop_signal = stop.signal
    return report


def _run_items(
    items: Sequence[T],
    work: Callable[[T], Outcome],
    name_of: Callable[[T], str],
    bar: Iterable[T],
    report: BatchReport,
    stop: StopRequest | None,
) -> None:
    for index, item in enumerate(bar):
        if stop is not None and stop.requested:
            report.stop_signal = stop.signal
            report.not_done = [name_of(left) for left in items[index:]]
            return
        name = name_of(item)
        try:
            outcome = work(item)
        except Exception as error:
            message, is_bug = failure_of(error)
            if is_bug:
                logger.exception("%s: unexpected error", name)
            else:
                logger.error("%s: %s", name, message)
            report.failed[name] = message
        else:
            (report.done if outcome == "done" else report.skipped).append(name)


def failure_of(error: Exception) -> tuple[str, bool]:
    """How a failed item is reported: its message, and whether it points at a bug (to be logged with its traceback)
    rather than at the input or the disk (`InputError`, `OSError`: one line, whose message names the file)."""
    if isinstance(error, (InputError, OSError)):
        return str(error), False
    return f"{type(error).__name__}: {error}", True
