"""The inference process's settings: TensorFlow's allocator set before it is imported, the voxel limit from memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from efficientscn.infer import runtime
from efficientscn.infer.runtime import (
    BASE_MEMORY_BYTES,
    BYTES_PER_VOXEL,
    MAX_VOXELS_CAP,
    MIN_VOXELS_LIMIT,
    SYSTEM_ALLOCATOR,
    max_voxels_for_memory,
    memory_bytes,
)

_SETTING = """
import os, sys
from efficientscn.infer.runtime import SYSTEM_ALLOCATOR, prepare_environment
if sys.argv[1] == "late":
    import tensorflow
prepare_environment(lone_ct=sys.argv[2] == "lone")
print(os.environ.get(SYSTEM_ALLOCATOR))
"""


def _allocator(when: str, inputs: str, **environment: str) -> str:
    clean = {key: value for key, value in os.environ.items() if key != SYSTEM_ALLOCATOR}
    command = [sys.executable, "-c", _SETTING, when, inputs]
    done = subprocess.run(command, env={**clean, **environment}, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_a_lone_ct_gets_the_system_allocator_a_batch_the_pool_unless_the_user_chose() -> None:
    assert _allocator("early", "lone") == "1"
    assert _allocator("early", "batch") == "0"
    assert _allocator("early", "lone", **{SYSTEM_ALLOCATOR: "0"}) == "0"
    assert _allocator("early", "batch", **{SYSTEM_ALLOCATOR: "1"}) == "1"
    # too late once TensorFlow is imported: left alone rather than set without effect
    assert _allocator("late", "lone") == "None"


def test_the_voxel_limit_follows_the_memory() -> None:
    gib = 1024**3
    assert max_voxels_for_memory(4 * gib) == (4 * gib - BASE_MEMORY_BYTES) // BYTES_PER_VOXEL  # 465 M voxels
    assert max_voxels_for_memory(64 * gib) == MAX_VOXELS_CAP  # a 512 x 512 x 4096 scan at most
    assert max_voxels_for_memory(BASE_MEMORY_BYTES // 2) == MIN_VOXELS_LIMIT  # a common CT is always tried


def test_a_container_limit_below_the_machine_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    limit, unlimited = tmp_path / "memory.max", tmp_path / "other.max"
    limit.write_text("3000000000\n")
    unlimited.write_text("max\n")
    monkeypatch.setattr(runtime, "_CGROUP_LIMITS", (unlimited, limit, tmp_path / "missing"))
    assert memory_bytes() == 3_000_000_000
    assert max_voxels_for_memory() == (3_000_000_000 - BASE_MEMORY_BYTES) // BYTES_PER_VOXEL
    monkeypatch.setattr(runtime, "_CGROUP_LIMITS", (unlimited,))
    assert memory_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
