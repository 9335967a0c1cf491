"""The inference process's own settings: TensorFlow's CPU allocator, and the largest CT this machine's memory takes.

With its default allocator, TensorFlow's oneDNN build keeps every block it ever allocated in a pool: the SCN's
activations stay resident after a case, and a lone 512 x 512 x 200 CT peaked at 1.84 GB; with the system
allocator it peaked at 1.39 GB, with the same labels, but the SCN took 0.7 s longer per case (measured in the
README's benchmark). So a lone CT, where memory is what a user waits on, gets the system allocator, and a folder
of CTs, where each case repeats that cost, keeps the pool. The setting must be made before TensorFlow is imported,
which `prepare_environment` does for the command line; a value the user set stands.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

SYSTEM_ALLOCATOR = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"
"""The environment variable that gives TensorFlow's oneDNN build the system allocator ("1") instead of its pool."""

BASE_MEMORY_BYTES = 1_500_000_000
"""Peak memory of inference beside the CT: TensorFlow, the networks and the SCN's activations at its largest input."""
BYTES_PER_VOXEL = 6
"""Peak memory per CT voxel: the int16 CT, a second copy while it is read, its label and the label put back."""
MAX_VOXELS_CAP = 1024 * 1024 * 1024
"""The largest CT accepted whatever the memory (a 512 x 512 x 4096 scan), the size the pipeline is tested for."""
MIN_VOXELS_LIMIT = 64 * 1024 * 1024
"""The limit however little the memory: a 512 x 512 x 256 scan is always tried (it may still run out of memory)."""

_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def prepare_environment(*, lone_ct: bool) -> None:
    """Give TensorFlow the system allocator for a lone CT, its pool for a batch, unless the user set
    `SYSTEM_ALLOCATOR`; without effect (said in the debug log) once TensorFlow is imported."""
    if "tensorflow" in sys.modules:
        logger.debug("TensorFlow already imported: its allocator settings stay as they are")
        return
    os.environ.setdefault(SYSTEM_ALLOCATOR, "1" if lone_ct else "0")


def memory_bytes() -> int | None:
    """The memory this process may use: the machine's, or its container's (cgroup) limit if lower; None if unknown."""
    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):  # not a POSIX system that tells
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" means no limit
            limits.append(int(text))
    return min(limits) if limits else None


def max_voxels_for_memory(memory: int | None = None) -> int:
    """The largest CT, in voxels, whose inference fits in `memory` bytes (this machine's by default): the memory
    beyond `BASE_MEMORY_BYTES` at `BYTES_PER_VOXEL`, between `MIN_VOXELS_LIMIT` and `MAX_VOXELS_CAP` (the cap when
    memory is unknown)."""
    memory = memory_bytes() if memory is None else memory
    if memory is None:
        return MAX_VOXELS_CAP
    return max(MIN_VOXELS_LIMIT, min(MAX_VOXELS_CAP, (memory - BASE_MEMORY_BYTES) // BYTES_PER_VOXEL))
