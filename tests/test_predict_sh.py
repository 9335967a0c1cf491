"""`predict.sh`, the challenge image's entry point, is POSIX sh: the challenge runs it as `sh predict.sh`, and `sh` is
dash in Debian and Ubuntu images. It runs under dash, bash and as a program, passes its arguments through to
`efficientscn predict`, and the shell linter finds nothing in it or in the CI scripts. (docker/check.py runs it in
the image itself, with the real command.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO_ROOT, skip_or_fail

PREDICT_SH = REPO_ROOT / "predict.sh"


def _tool(name: str) -> str:
    """The path of a system tool (Debian package of the same name); skips without it, or fails under CI."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed (Debian package {name}; .ci/install-tools installs it)")
    return path


def _recorder(folder: Path) -> tuple[Path, Path]:
    """A stand-in for the efficientscn command that records its arguments, one per line, then the GPU allocator
    setting it was given, and exits with status 3; returns the command and its record."""
    record = folder / "record.txt"
    command = folder / "efficientscn"
    command.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" "allocator=$TF_GPU_ALLOCATOR" > "{record}"\nexit 3\n')
    command.chmod(0o755)
    return command, record


@pytest.mark.parametrize("way", ["dash", "bash", "program"])
def test_predict_sh_passes_its_folders_and_extra_arguments_to_predict(way: str, tmp_path: Path) -> None:
    command, record = _recorder(tmp_path)
    environment = {
        "PATH": os.environ["PATH"],
        "EFFICIENTSCN": str(command),
        "INPUT_DIR": "/in put",
        "OUTPUT_DIR": "/out",
        "MODELS_DIR": "/models",
    }
    start = [str(PREDICT_SH)] if way == "program" else [_tool(way), str(PREDICT_SH)]
    done = subprocess.run([*start, "-q", "--report", "run 1.json"], env=environment, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr  # the command's own exit status
    assert record.read_text().splitlines() == [
        "predict",
        "-i",
        "/in put",
        "-o",
        "/out",
        "--models",
        "/models",
        "-q",
        "--report",
        "run 1.json",
        "allocator=cuda_malloc_async",
    ]


def test_predict_sh_defaults_to_the_challenge_folders_and_keeps_a_given_allocator(tmp_path: Path) -> None:
    command, record = _recorder(tmp_path)
    environment = {"PATH": os.environ["PATH"], "EFFICIENTSCN": str(command), "TF_GPU_ALLOCATOR": "bfc"}
    done = subprocess.run([_tool("dash"), str(PREDICT_SH)], env=environment, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert record.read_text().splitlines() == [
        "predict",
        "-i",
        "/workspace/inputs",
        "-o",
        "/workspace/outputs",
        "--models",
        "/workspace/saved_models",
        "allocator=bfc",
    ]


def test_predict_sh_stops_with_the_reason_when_the_command_is_missing(tmp_path: Path) -> None:
    environment = {"PATH": os.environ["PATH"], "EFFICIENTSCN": str(tmp_path / "missing")}
    done = subprocess.run([_tool("dash"), str(PREDICT_SH)], env=environment, capture_output=True, text=True)
    assert done.returncode == 127
    assert str(tmp_path / "missing") in done.stderr


@pytest.mark.parametrize(
    ("script", "dialect"), [("predict.sh", "sh"), (".ci/run", "bash"), (".ci/install-tools", "bash")]
)
def test_shell_scripts_pass_the_linter(script: str, dialect: str) -> None:
    done = subprocess.run([_tool("shellcheck"), "-s", dialect, str(REPO_ROOT / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_linter_finds_what_dash_refuses(tmp_path: Path) -> None:
    """The linter in POSIX mode would have caught what broke `sh predict.sh` (`set -o pipefail`, under dash)."""
    script = tmp_path / "bashism.sh"
    script.write_text("#!/bin/sh\nset -euo pipefail\necho done\n")
    assert subprocess.run([_tool("dash"), str(script)], capture_output=True).returncode != 0
    assert subprocess.run([_tool("shellcheck"), "-s", "sh", str(script)], capture_output=True).returncode != 0
