"""TensorFlow's and absl's C++ log lines kept off the console, unless asked for (`-v`).

On every run TensorFlow's native code writes 10 to 40 lines straight to the process's stderr, before and after
Python's logging is set up: absl's "All log messages before absl::InitializeLog()", oneDNN and CPU feature notes,
Grappler's sessions, and on a machine without a GPU an `E0000 ... failed call to cuInit` that reads as an error. No
TensorFlow setting silences the ones written before absl is initialised, so the command's stderr (file descriptor 2)
is a pipe, and a thread passes on every line except those of native logging; the command's own messages and its
progress bar go to the real stderr directly. A line that is not native logging (a crash report, say) still shows.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.+-]+:\d+\] "  # absl / TensorFlow C++ logging (not F: fatal)
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: )"  # the second line of the CPU feature note
)
"""The start of a line of native logging: absl's prefix (severity, date, time, thread, file:line), or one of the two
lines absl and the CPU feature guard write without it."""

PYTHON_LOGGERS = ("tensorflow", "absl")
"""TensorFlow's own Python loggers: their warnings (retracing, deprecations) are for developers, shown under -v."""


@contextmanager
def native_logs_filtered(*, verbose: bool) -> Iterator[None]:
    """Inside, the process's stderr passes on everything but native log lines (all of it if `verbose`); the
    Python-level stream `sys.stderr` writes to the real stderr. Restores both on leaving."""
    if verbose:
        yield
        return
    for name in PYTHON_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    real = os.dup(2)
    reading, writing = os.pipe()
    os.dup2(writing, 2)
    os.close(writing)
    python_stderr = sys.stderr
    sys.stderr = open(real, "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace", closefd=False)  # noqa: SIM115
    forward = threading.Thread(target=_forward, args=(reading, real), name="native-logs", daemon=True)
    forward.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(real, 2)  # closes the pipe's last writer: the thread reads to its end
        forward.join(timeout=1.0)
        os.close(real)


def _forward(reading: int, real: int) -> None:
    """Copy the lines of `reading` to `real`, leaving out native log lines, until the pipe closes."""
    with os.fdopen(reading, "rb") as pipe:
        for line in pipe:
            if not NATIVE_LOG_LINE.match(line):
                os.write(real, line)
