"""The project's own promises: CI runs the README's commands, and the code is ruff clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT


def _ci_commands() -> list[str]:
    lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith(("#", "set ", "cd "))]


def test_ci_runs_exactly_the_readme_set_up_and_test_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    commands = _ci_commands()
    assert len(commands) == 3
    set_up, *tests = commands
    assert "## Set up" in readme and f"\n{set_up}\n" in readme.split("## Set up")[1].split("## ")[0]
    for test in tests:  # the default suite, then the long checks marked slow
        assert f"\n{test}\n" in readme.split("## Test")[1].split("## ")[0]


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]])
def test_code_is_ruff_clean(check: list[str]) -> None:
    ruff = Path(sys.executable).parent / "ruff"
    executable = str(ruff) if ruff.exists() else shutil.which("ruff")
    assert executable, "ruff is part of the test extra"
    result = subprocess.run([executable, *check, str(REPO_ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
