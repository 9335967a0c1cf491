"""TensorFlow's native log lines are kept off the console unless -v; everything else still shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NATIVE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796530291.787827   28463 port.cc:153] oneDNN custom operations are on.",
    "E0000 00:00:1796530323.930170   28463 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    "W1206 04:30:01.123456   12 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
    "To enable the following instructions: AVX2 AVX512F AVX512_BF16, in other operations, rebuild TensorFlow",
]
KEPT = [
    "F0000 00:00:1796530323.930170   28463 some.cc:1] a fatal error: shown",  # fatal native errors always show
    "Segmentation fault in something that is not logging",
]


def _run(tmp_path: Path, *, verbose: bool) -> str:
    script = f"""
import logging, os, sys
from efficientscn.native_logs import native_logs_filtered
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
with native_logs_filtered(verbose={verbose}):
    logging.getLogger("efficientscn").warning("a warning of ours")
    for line in {NATIVE + KEPT!r}:
        os.write(2, (line + "\\n").encode())
    print("python's own stderr line", file=sys.stderr)
os.write(2, b"after the block\\n")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_native_log_lines_are_left_out_and_every_other_line_passes(tmp_path: Path) -> None:
    shown = _run(tmp_path, verbose=False).splitlines()
    assert not set(NATIVE) & set(shown)
    for line in (*KEPT, "WARNING a warning of ours", "python's own stderr line", "after the block"):
        assert line in shown


def test_with_verbose_every_native_line_shows(tmp_path: Path) -> None:
    shown = _run(tmp_path, verbose=True).splitlines()
    assert set(NATIVE + KEPT) <= set(shown)
