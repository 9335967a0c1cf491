"""Shared fixtures; the helpers they use live in helpers.py (tests import from there, never from each other)."""

from __future__ import annotations

import pytest

from helpers import MISSING, SHARED_CASES, SharedCase, require_shared_data, shared_case


@pytest.fixture(params=sorted(SHARED_CASES) or [MISSING])
def any_shared_case(request: pytest.FixtureRequest) -> SharedCase:
    """Every real case in turn: NIfTI, DICOM folders, LPI, ASL, oblique and thick-slice variants."""
    require_shared_data()
    return shared_case(request.param)
