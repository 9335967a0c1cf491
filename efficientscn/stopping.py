"""Ctrl-C and SIGTERM stop a batch between cases instead of killing it mid-write.

The first signal asks the batch to stop: the case in hand finishes (its outputs are written atomically, so a label
is complete or absent), the others are reported as not done, and the command exits 130 (SIGINT) or 143 (SIGTERM),
as a shell expects. A second signal interrupts at once, as without this.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether, and by which signal, the batch was asked to stop."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Inside: SIGINT and SIGTERM set the yielded request (said in the log) instead of interrupting; a second one
    interrupts as usual. Outside the main thread, where handlers cannot be set, the request is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    # None: a handler not set from Python, which cannot be put back; the default is the nearest
    previous = {number: signal.getsignal(number) or signal.SIG_DFL for number in STOP_SIGNALS}

    def ask_to_stop(number: int, frame: FrameType | None) -> None:
        request.signal = number
        for other in STOP_SIGNALS:  # the next one acts at once
            signal.signal(other, previous[other])
        logger.warning("%s: stopping after the case in hand (again to stop at once)", signal.Signals(number).name)

    for number in STOP_SIGNALS:
        signal.signal(number, ask_to_stop)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
