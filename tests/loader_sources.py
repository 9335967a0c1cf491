"""Sample sources of the loader's tests, in a module of their own: its worker processes unpickle them by module
name, and a test module's name (`tests.data.test_loader`) does not import there where an installed package also
calls itself `tests` (rt-utils installs one)."""

from __future__ import annotations

import os

import numpy as np


class CountingSource:
    """Samples whose value says which case they are from; picklable for the worker processes."""

    def sample(self, case: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"image": np.full((2, 3, 4, 1), int(case[-1]), np.float32), "pid": np.array(os.getpid())}


class FailingSource:
    """Fails on the case named "broken_case"."""

    def sample(self, case: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if case == "broken_case":
            raise ValueError("cannot read this CT")
        return {"image": np.zeros((2, 2, 2, 1), np.float32)}


class BigSource:
    """Samples of 64 MB: far more than a pipe holds, so a worker is killed in the middle of sending one."""

    def sample(self, case: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"image": np.ones((16, 1024, 1024), np.float32)}
