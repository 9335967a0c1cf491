"""Where the benchmarks find the repository, the test CTs and the original's released files: where the tests do."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EFFICIENTSCN_SHARED_DATA", REPO_ROOT / "tests" / "ct_data"))
"""The test CTs (`cases.json` and the files it names), as the tests find them."""
ORIGINAL = Path(os.environ.get("EFFICIENTSCN_ORIGINAL", REPO_ROOT.parent / "shared" / "reference" / "original-repo"))
"""A clone of the original repository (its released models in submitted_saved_models/)."""
