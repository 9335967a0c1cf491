"""The inference process's settings: TensorFlow's allocator and threads set before it is imported, the voxel limit from
memory."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from efficientscn.infer import runtime
from efficientscn.infer.runtime import (
    BASE_MEMORY_BYTES,
    BYTES_PER_VOXEL,
    INTER_OP_THREADS,
    MAX_VOXELS_CAP,
    MIN_VOXELS_LIMIT,
    POOL_SLAB_BUDGET_BYTES,
    SLAB_BUDGET_BYTES,
    SYSTEM_ALLOCATOR,
    default_slab_budget,
    max_voxels_for_memory,
    memory_bytes,
    peak_memory_bytes,
)

_SETTING = """
import os, sys
from efficientscn.infer.runtime import prepare_environment
if sys.argv[1] == "late":
    import tensorflow
prepare_environment(lone_ct=sys.argv[2] == "lone")
print(os.environ.get(sys.argv[3]))
"""


def _setting(variable: str, when: str, inputs: str, **environment: str) -> str:
    """The value of environment `variable` after `prepare_environment` for a lone CT or a batch (`inputs`), called
    before or after TensorFlow is imported (`when`), in a fresh process with `environment` set."""
    clean = {key: value for key, value in os.environ.items() if key not in (SYSTEM_ALLOCATOR, INTER_OP_THREADS)}
    command = [sys.executable, "-c", _SETTING, when, inputs, variable]
    done = subprocess.run(command, env={**clean, **environment}, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def _allocator(when: str, inputs: str, **environment: str) -> str:
    return _setting(SYSTEM_ALLOCATOR, when, inputs, **environment)


def test_a_lone_ct_gets_the_system_allocator_a_batch_the_pool_unless_the_user_chose() -> None:
    assert _allocator("early", "lone") == "1"
    assert _allocator("early", "batch") == "0"
    assert _allocator("early", "lone", **{SYSTEM_ALLOCATOR: "0"}) == "0"
    assert _allocator("early", "batch", **{SYSTEM_ALLOCATOR: "1"}) == "1"
    # too late once TensorFlow is imported: left alone rather than set without effect
    assert _allocator("late", "lone") == "None"


def test_tensorflow_runs_one_operation_at_a_time_unless_the_user_chose() -> None:
    assert _setting(INTER_OP_THREADS, "early", "lone") == "1"
    assert _setting(INTER_OP_THREADS, "early", "batch") == "1"
    assert _setting(INTER_OP_THREADS, "early", "batch", **{INTER_OP_THREADS: "4"}) == "4"
    assert _setting(INTER_OP_THREADS, "late", "batch") == "None"


def test_the_voxel_limit_is_the_largest_ct_the_memory_model_fits() -> None:
    """The limit is the largest CT whose modelled peak, with the SCN at its largest input, fits the memory; the
    refusal says why, and the whole networks (`--slab-memory off`) need more."""
    gb = 1_000_000_000
    for memory, name in itertools.product((3 * gb, 7 * gb // 2, 4 * gb), BASE_MEMORY_BYTES):
        limit = max_voxels_for_memory(memory, allocator_name=name)
        assert (
            peak_memory_bytes(limit, allocator_name=name) <= memory < peak_memory_bytes(limit + 1, allocator_name=name)
        )
        assert f"{memory / gb:.1f} GB of memory" in limit.reason
        assert max_voxels_for_memory(memory, slabs=False, allocator_name=name) <= limit
    # 2 GB: a lone CT of about 288 M voxels (a 512 x 512 x 1100 scan), the networks beside the CT decide; a batch,
    # whose pool keeps the SCN's largest slabs beside the CT, about 69 M (512 x 512 x 265); 1.9 GB the size always tried
    assert 283_000_000 < max_voxels_for_memory(2 * gb, allocator_name="system") < 293_000_000
    assert 68_000_000 < max_voxels_for_memory(2 * gb, allocator_name="pool") < 71_000_000
    assert max_voxels_for_memory(19 * gb // 10, allocator_name="pool") == MIN_VOXELS_LIMIT
    # in a batch of 3 GB the whole networks' SCN decides
    assert max_voxels_for_memory(3 * gb, slabs=False, allocator_name="pool") < max_voxels_for_memory(3 * gb)
    assert max_voxels_for_memory(64 * gb) == MAX_VOXELS_CAP  # a 512 x 512 x 4096 scan at most
    assert max_voxels_for_memory(BASE_MEMORY_BYTES["system"] // 2) == MIN_VOXELS_LIMIT  # a common CT is always tried


def test_the_memory_model_takes_the_larger_of_the_label_and_the_networks() -> None:
    """A small CT's peak is the networks' (the SCN input decides), a large one's filling in its label unless the SCN
    input is large."""
    small, large = 512 * 512 * 20, 512 * 512 * 1208
    for name in BASE_MEMORY_BYTES:
        allocated = {"allocator_name": name}
        assert peak_memory_bytes(small, 160 * 128 * 160, **allocated) > peak_memory_bytes(
            small, 64 * 64 * 96, **allocated
        )
        assert peak_memory_bytes(small, slabs=False, **allocated) > peak_memory_bytes(small, **allocated)
    # a lone whole-body CT with a small SCN input: filling in its label decides
    lone = {"allocator_name": "system"}
    assert peak_memory_bytes(large, 64 * 64 * 96, **lone) == peak_memory_bytes(large, 64 * 64 * 64, **lone)
    assert peak_memory_bytes(large, 64 * 64 * 96, **lone) == BASE_MEMORY_BYTES["system"] + BYTES_PER_VOXEL * large
    assert peak_memory_bytes(large, 160 * 128 * 160, **lone) > peak_memory_bytes(large, 64 * 64 * 96, **lone)
    # in a batch the pool keeps what the SCN held beside the CT and its label, and the next CT read ahead up to a size
    assert peak_memory_bytes(large, 160 * 128 * 160) > peak_memory_bytes(large, 64 * 64 * 96)
    assert peak_memory_bytes(large, 64 * 64 * 96) > peak_memory_bytes(large, 64 * 64 * 96, allocator_name="system")
    read_ahead = runtime.READ_AHEAD_MAX_VOXELS
    assert peak_memory_bytes(read_ahead + 1) < peak_memory_bytes(read_ahead)


def test_a_ct_over_the_limit_is_refused_from_its_header_with_the_reason(tmp_path: Path) -> None:
    """A machine refuses, before reading its voxels, a scan its memory cannot hold, and names the memory."""
    import SimpleITK as sitk

    from efficientscn.errors import InputError
    from efficientscn.imaging.canonical import CanonicalCT

    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.Image([64, 64, 40], sitk.sitkInt16), str(path))
    limit = runtime.VoxelLimit(64 * 64 * 39, "what 1.0 GB of memory holds")
    with pytest.raises(InputError, match=r"163,840 voxels .*the limit is 159,744, what 1.0 GB of memory holds"):
        CanonicalCT.read(path, max_voxels=limit)


def test_a_container_limit_below_the_machine_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    limit, unlimited = tmp_path / "memory.max", tmp_path / "other.max"
    limit.write_text("3000000000\n")
    unlimited.write_text("max\n")
    monkeypatch.setattr(runtime, "_CGROUP_LIMITS", (unlimited, limit, tmp_path / "missing"))
    assert memory_bytes() == 3_000_000_000
    assert max_voxels_for_memory() == max_voxels_for_memory(3_000_000_000)
    monkeypatch.setattr(runtime, "_CGROUP_LIMITS", (unlimited,))
    assert memory_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_lone_ct_gets_small_slabs_a_batch_deeper_ones_by_its_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--slab-memory auto`: memory first with the system allocator of a lone CT, speed with a batch's pool."""
    monkeypatch.setenv(SYSTEM_ALLOCATOR, "1")
    assert default_slab_budget() == SLAB_BUDGET_BYTES == 64 * 2**20
    monkeypatch.setenv(SYSTEM_ALLOCATOR, "0")
    assert default_slab_budget() == POOL_SLAB_BUDGET_BYTES > SLAB_BUDGET_BYTES
    monkeypatch.delenv(SYSTEM_ALLOCATOR)
    assert default_slab_budget() == POOL_SLAB_BUDGET_BYTES  # TensorFlow's own default: the pool
