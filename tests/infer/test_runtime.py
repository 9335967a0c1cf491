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
    INFERENCE_ENVIRONMENT,
    MAX_VOXELS_CAP,
    max_voxels_for_memory,
    memory_bytes,
)

_SETTINGS = """
import os, sys
from efficientscn.infer.runtime import INFERENCE_ENVIRONMENT, prepare_environment
if sys.argv[1] == "late":
    import tensorflow
prepare_environment()
print({name: os.environ.get(name) for name in INFERENCE_ENVIRONMENT})
"""


def _settings(when: str, **environment: str) -> dict[str, str | None]:
    clean = {key: value for key, value in os.environ.items() if key not in INFERENCE_ENVIRONMENT}
    done = subprocess.run(
        [sys.executable, "-c", _SETTINGS, when],
        env={**clean, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    return eval(done.stdout.strip().splitlines()[-1])  # a dict literal printed by the child


def test_the_allocator_is_set_before_tensorflow_unless_the_user_chose() -> None:
    assert _settings("early") == INFERENCE_ENVIRONMENT
    assert _settings("early", TF_ONEDNN_USE_SYSTEM_ALLOCATOR="0") == {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}
    # too late once TensorFlow is imported: left alone rather than set without effect
    assert _settings("late") == dict.fromkeys(INFERENCE_ENVIRONMENT)


def test_the_voxel_limit_follows_the_memory() -> None:
    gib = 1024**3
    assert max_voxels_for_memory(4 * gib) == (4 * gib - BASE_MEMORY_BYTES) // BYTES_PER_VOXEL  # 465 M voxels
    assert max_voxels_for_memory(64 * gib) == MAX_VOXELS_CAP  # a 512 x 512 x 4096 scan at most
    assert max_voxels_for_memory(BASE_MEMORY_BYTES // 2) == 0  # too little memory for any CT


def test_a_container_limit_below_the_machine_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    limit, unlimited = tmp_path / "memory.max", tmp_path / "other.max"
    limit.write_text("3000000000\n")
    unlimited.write_text("max\n")
    monkeypatch.setattr(runtime, "_CGROUP_LIMITS", (unlimited, limit, tmp_path / "missing"))
    assert memory_bytes() == 3_000_000_000
    assert max_voxels_for_memory() == (3_000_000_000 - BASE_MEMORY_BYTES) // BYTES_PER_VOXEL
    monkeypatch.setattr(runtime, "_CGROUP_LIMITS", (unlimited,))
    assert memory_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
