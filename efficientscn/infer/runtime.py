"""The inference process's own settings: TensorFlow's CPU allocator, and the largest CT this machine's memory takes.

With its default allocator, TensorFlow's oneDNN build keeps every block it ever allocated in a pool: the SCN's
activations stay resident after a case. With the system allocator they are handed back to glibc's malloc, which
hands back to the system only blocks above its mmap threshold, and raises that threshold, by default, to the
largest block freed so far (up to 32 MB): the medium-sized tensors of slab-wise inference then stay resident in its
heap as well (a lone 512 x 512 x 151 CT peaked at 1.50 GB instead of 1.20 GB). So a lone CT, where memory is what a
user waits on, gets the system allocator with a fixed mmap threshold (`MMAP_THRESHOLD_BYTES`), which returns every
freed tensor larger than it at once; a folder of CTs, where each case would pay for mapping those pages anew (about
1 s of the SCN's CPU time), keeps the pool, which slab-wise inference keeps small. The settings are made before
TensorFlow is imported, which `prepare_environment` does for the command line; values the user set stand.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

SYSTEM_ALLOCATOR = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"
"""The environment variable that gives TensorFlow's oneDNN build the system allocator ("1") instead of its pool."""

MMAP_THRESHOLD_BYTES = 4 * 2**20
"""With the system allocator, malloc blocks from this size on are mapped on their own and unmapped when freed."""
MMAP_THRESHOLD_VARIABLE = "MALLOC_MMAP_THRESHOLD_"
"""glibc's environment variable for the same setting: a value the user gave it stands."""
_M_MMAP_THRESHOLD = -3
"""glibc's `mallopt` parameter number of the mmap threshold (malloc.h)."""

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
    `SYSTEM_ALLOCATOR`, and with the system allocator a fixed mmap threshold (`fix_mmap_threshold`); without effect
    (said in the debug log) once TensorFlow is imported."""
    if "tensorflow" in sys.modules:
        logger.debug("TensorFlow already imported: its allocator settings stay as they are")
        return
    os.environ.setdefault(SYSTEM_ALLOCATOR, "1" if lone_ct else "0")
    if os.environ[SYSTEM_ALLOCATOR] == "1":
        fix_mmap_threshold()


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Make glibc's malloc map blocks of `threshold` bytes and more on their own, returned to the system when freed,
    instead of raising the threshold as blocks are freed; whether it was set (not where the user set
    `MMAP_THRESHOLD_VARIABLE`, nor on a C library without `mallopt`)."""
    if MMAP_THRESHOLD_VARIABLE in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without it): its own policy stands
        logger.debug("no mallopt in this C library: the allocator's mmap threshold stays as it is")
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


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
