"""Shared fixtures: the real CT cases of ../shared/data and synthetic phantoms.

The real cases are found at $EFFICIENTSCN_SHARED_DATA or at ../shared/data beside the repository. Without them
the tests that need them are skipped locally; under CI=true that is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EFFICIENTSCN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _load_cases() -> dict[str, dict]:
    path = SHARED_DATA / "cases.json"
    return {case["id"]: case for case in json.loads(path.read_text())} if path.is_file() else {}


SHARED_CASES = _load_cases()
MISSING = "<shared data missing>"


def require_shared_data() -> Path:
    """The shared data folder; skips the test if it is missing, or fails it under CI."""
    if not SHARED_CASES:
        message = f"shared test data not found at {SHARED_DATA} (set EFFICIENTSCN_SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


@dataclass(frozen=True)
class SharedCase:
    """One real case of ../shared/data/cases.json."""

    id: str
    image: Path
    label: Path
    meta: dict


def shared_case(case_id: str) -> SharedCase:
    """A case by ID, after `require_shared_data`."""
    root = require_shared_data()
    meta = SHARED_CASES[case_id]
    return SharedCase(case_id, root / meta["image"], root / meta["flare_label"], meta)


@pytest.fixture(params=sorted(SHARED_CASES) or [MISSING])
def any_shared_case(request: pytest.FixtureRequest) -> SharedCase:
    """Every real case in turn: NIfTI, DICOM folders, LPI, ASL, oblique and thick-slice variants."""
    require_shared_data()
    return shared_case(request.param)
