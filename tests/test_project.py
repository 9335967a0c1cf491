"""The project's own promises: CI runs the README's commands with every test, the fidelity register holds what the
code cites and the tests it names exist, and the code is ruff clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO_ROOT


def _ci_commands() -> list[str]:
    lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith(("#", "set ", "cd ", "export "))]


def test_ci_runs_exactly_the_readme_set_up_and_test_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    # CI's own step first: the system tools, installed where missing
    install_tools, *commands = _ci_commands()
    assert install_tools == ".ci/install-tools"
    assert len(commands) == 4
    set_up, *tests = commands
    assert "## Set up" in readme and f"\n{set_up}\n" in readme.split("## Set up")[1].split("## ")[0]
    for test in tests:  # the default suite, the long checks marked slow, then the container check
        assert f"\n{test}\n" in readme.split("## Test")[1].split("## ")[0]
    # a clone without ../shared fails instead of skipping the tests that need it
    assert "\nexport CI=true\n" in (REPO_ROOT / ".ci" / "run").read_text()


def test_fidelity_register_holds_every_entry_the_code_cites_and_every_test_it_names_exists() -> None:
    register = (REPO_ROOT / "docs" / "fidelity.md").read_text()
    entries = [int(n) for n in re.findall(r"^\*\*#(\d+) ", register, flags=re.MULTILINE)]
    assert entries == list(range(1, len(entries) + 1))  # numbered once each, in order
    sources = [*(REPO_ROOT / "efficientscn").rglob("*.py"), *(REPO_ROOT / "tests").rglob("*.py")]
    cited = {int(n) for path in sources for n in re.findall(r"fidelity\.md #(\d+)", path.read_text())}
    assert cited and cited <= set(entries)
    named = set(re.findall(r"`tests/((?:\w+/)?test_\w+\.py)::(test_\w+)`", register))
    assert len(named) > 40
    for file, test in sorted(named):
        assert re.search(rf"^def {test}\(", (REPO_ROOT / "tests" / file).read_text(), flags=re.MULTILINE), (file, test)


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]])
def test_code_is_ruff_clean(check: list[str]) -> None:
    ruff = Path(sys.executable).parent / "ruff"
    executable = str(ruff) if ruff.exists() else shutil.which("ruff")
    assert executable, "ruff is part of the test extra"
    result = subprocess.run([executable, *check, str(REPO_ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
