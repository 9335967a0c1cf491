"""Run one piece of work per case, so that a bad case is reported and the others go on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from tqdm import tqdm

from efficientscn.errors import InputError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = Literal["done", "skipped"]


@dataclass
class BatchReport:
    """What happened to each case of a batch, by case name."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no case failed."""
        return not self.failed

    def summary(self) -> str:
        """One line: how many cases were done, skipped and failed."""
        skipped = f", {len(self.skipped)} skipped (already there)" if self.skipped else ""
        return f"{len(self.done)} done{skipped}, {len(self.failed)} failed"


def run_batch(
    items: Sequence[T],
    work: Callable[[T], Outcome],
    *,
    name_of: Callable[[T], str],
    description: str,
    progress: bool = True,
) -> BatchReport:
    """Call `work` on every item in order, with a progress bar; a failing item is logged and recorded, not raised.

    `InputError` and `OSError` are logged as one line (their messages name the file); any other exception is
    logged with its traceback, since it points at a bug rather than at the input or the disk. KeyboardInterrupt
    stops the batch.
    """
    report = BatchReport()
    for item in tqdm(items, desc=description, unit="case", disable=not progress):
        name = name_of(item)
        try:
            outcome = work(item)
        except (InputError, OSError) as error:  # the input or the disk, not a bug: one line naming the file
            logger.error("%s: %s", name, error)
            report.failed[name] = str(error)
        except Exception as error:
            logger.exception("%s: unexpected error", name)
            report.failed[name] = f"{type(error).__name__}: {error}"
        else:
            (report.done if outcome == "done" else report.skipped).append(name)
    return report
