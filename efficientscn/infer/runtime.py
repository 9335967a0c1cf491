"""The inference process's own settings: TensorFlow's CPU allocator and inter-op threads, and the largest CT this
machine's memory takes.

With its default allocator, TensorFlow's oneDNN build keeps every block it ever allocated in a pool: the SCN's
activations stay resident after a case. With the system allocator they are handed back to glibc's malloc, which
hands back to the system only blocks above its mmap threshold, and raises that threshold, by default, to the
largest block freed so far (up to 32 MB): the medium-sized tensors of slab-wise inference then stay resident in its
heap as well (a lone 512 x 512 x 151 CT peaked at 1.50 GB instead of 1.20 GB). So a lone CT, where memory is what a
user waits on, gets the system allocator with a fixed mmap threshold (`MMAP_THRESHOLD_BYTES`), which returns every
freed tensor larger than it at once; a folder of CTs, where each case would pay for mapping those pages anew (about
1 s of the SCN's CPU time), keeps the pool, and runs deeper slabs (`POOL_SLAB_BUDGET_BYTES`), which the pool would
keep anyway. Either way TensorFlow runs one operation at a time (`INTER_OP_THREADS`), each with all its intra-op
threads. The settings are made before TensorFlow is imported, which `prepare_environment` does for the command line;
values the user set stand.
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

SLAB_BUDGET_BYTES = 64 * 2**20
"""What a slab of a network's full-resolution levels may hold (`efficientscn.nn.slabs`): its depth follows from
it and the input's plane; None instead runs the networks whole, as exported. The default where memory comes first
(a lone CT, the Python API)."""
POOL_SLAB_BUDGET_BYTES = 256 * 2**20
"""The slab budget of a batch, whose allocator pool keeps what the largest slab needed anyway: deeper slabs, fewer
of them, within about 6 % of the whole networks' speed where 64 MB costs about 25 % (the README's figures)."""

INTER_OP_THREADS = "TF_NUM_INTEROP_THREADS"
"""TensorFlow's environment variable for its inter-op thread pool, which runs independent operations of a graph at
once (by default as many as the machine has cores). At "1" they run one after the other, each on all the intra-op
threads, so their tensors are not all held at once: the same batch of five 512 x 512 x 200 CTs peaked at 1.67, 1.87
and 2.28 GiB in three runs with the default, and at 1.67 GiB in each of three with 1, at the same speed."""

MMAP_THRESHOLD_BYTES = 4 * 2**20
"""With the system allocator, malloc blocks from this size on are mapped on their own and unmapped when freed."""
MMAP_THRESHOLD_VARIABLE = "MALLOC_MMAP_THRESHOLD_"
"""glibc's environment variable for the same setting: a value the user gave it stands."""
_M_MMAP_THRESHOLD = -3
"""glibc's `mallopt` parameter number of the mmap threshold (malloc.h)."""

BASE_MEMORY_BYTES = {"system": 1_030_000_000, "pool": 1_120_000_000}
"""Peak memory of inference beside the CT and the SCN (`peak_memory_bytes`): TensorFlow, the package, the networks'
graphs and what the allocator keeps, with the system allocator (a lone CT) and with TensorFlow's pool (a batch)."""
BYTES_PER_VOXEL = 3
"""Peak memory per CT voxel while its label is filled in on the processing grid where the organ box lies (at most
the whole CT) beside the int16 CT. Reading holds the CT once (`nifti_read`), and writing the label on the CT's own
grid holds two labels of 1 byte per voxel, the CT freed (`CaseRunner`, unless statistics or a preview read it)."""
BYTES_PER_VOXEL_HELD = 2
"""Memory per CT voxel while the networks run: the int16 CT; its box passes through them a slab at a time."""
BYTES_PER_SCN_INPUT_VOXEL = {"system": {"slabs": 120, "whole": 250}, "pool": {"slabs": 205, "whole": 440}}
"""The SCN's working memory per voxel of its input, by allocator, run by the default slabs (64 MB with the system
allocator of a lone CT, 256 MB with a batch's pool) or whole (`--slab-memory off`): the pool keeps what it once
held."""
LARGEST_SCN_INPUT_VOXELS = 160 * 128 * 160
"""The SCN's largest valid input (the paper's contract): any box is segmented at most at this size."""
MAX_VOXELS_CAP = 1024 * 1024 * 1024
"""The largest CT accepted whatever the memory (a 512 x 512 x 4096 scan), the size the pipeline is tested for."""
MIN_VOXELS_LIMIT = 64 * 1024 * 1024
"""The limit however little the memory: a 512 x 512 x 256 scan is always tried (it may still run out of memory)."""

_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def prepare_environment(*, lone_ct: bool) -> None:
    """Give TensorFlow the system allocator for a lone CT, its pool for a batch, unless the user set
    `SYSTEM_ALLOCATOR`, and with the system allocator a fixed mmap threshold (`fix_mmap_threshold`); one inter-op
    thread unless the user set `INTER_OP_THREADS`. Without effect (said in the debug log) once TensorFlow is
    imported."""
    if "tensorflow" in sys.modules:
        logger.debug("TensorFlow already imported: its allocator and thread settings stay as they are")
        return
    os.environ.setdefault(INTER_OP_THREADS, "1")
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


def allocator() -> str:
    """The allocator TensorFlow uses in this process ("system" or "pool", a key of `BASE_MEMORY_BYTES`), as
    `prepare_environment` or the user set it: the pool unless `SYSTEM_ALLOCATOR` is "1"."""
    return "system" if os.environ.get(SYSTEM_ALLOCATOR) == "1" else "pool"


def default_slab_budget() -> int:
    """The slab budget for this process's allocator (`allocator`): `SLAB_BUDGET_BYTES` with the system allocator
    of a lone CT, `POOL_SLAB_BUDGET_BYTES` with the pool of a batch."""
    return SLAB_BUDGET_BYTES if allocator() == "system" else POOL_SLAB_BUDGET_BYTES


READ_AHEAD_MAX_VOXELS = 64 * 1024 * 1024
"""In a batch, a next CT up to this size (128 MB in int16, a 512 x 512 x 256 scan) is read while the current one is
segmented (`predict.read_ahead`); a larger one when its turn comes, so that a batch needs little more memory than its
largest case."""


def peak_memory_bytes(
    ct_voxels: int,
    scn_input_voxels: int = LARGEST_SCN_INPUT_VOXELS,
    *,
    slabs: bool = True,
    allocator_name: str = "pool",
) -> int:
    """The memory model of inference: the peak resident memory of segmenting a CT of `ct_voxels` whose organ box
    gives the SCN an input of `scn_input_voxels`, whatever the box's size on the CT (the README compares it with
    measured peaks, lone and in a batch), beside the `allocator_name`'s `BASE_MEMORY_BYTES`.

    With the system allocator of a lone CT, what the SCN held is returned before the label is filled in: the larger
    of filling it in (`BYTES_PER_VOXEL`) and running the networks (`BYTES_PER_VOXEL_HELD` and the SCN's
    `BYTES_PER_SCN_INPUT_VOXEL`). In a batch TensorFlow's pool keeps what the SCN held: the sum of both, and the
    next CT read meanwhile, in a batch of CTs of this size small enough to be read ahead (`READ_AHEAD_MAX_VOXELS`).
    """
    scn = BYTES_PER_SCN_INPUT_VOXEL[allocator_name]["slabs" if slabs else "whole"] * scn_input_voxels
    base = BASE_MEMORY_BYTES[allocator_name]
    if allocator_name == "system":
        return base + max(BYTES_PER_VOXEL * ct_voxels, BYTES_PER_VOXEL_HELD * ct_voxels + scn)
    read_ahead = BYTES_PER_VOXEL_HELD * ct_voxels if ct_voxels <= READ_AHEAD_MAX_VOXELS else 0
    return base + scn + BYTES_PER_VOXEL * ct_voxels + read_ahead


class VoxelLimit(int):
    """The largest CT accepted, in voxels, with the reason for it, which a refusal names."""

    reason: str

    def __new__(cls, voxels: int, reason: str) -> VoxelLimit:
        limit = super().__new__(cls, voxels)
        limit.reason = reason
        return limit


def max_voxels_for_memory(
    memory: int | None = None, *, slabs: bool = True, allocator_name: str | None = None
) -> VoxelLimit:
    """The largest CT, in voxels, whose inference `peak_memory_bytes` fits in `memory` bytes (this machine's, or
    its container's limit, by default) whatever its organ box, between `MIN_VOXELS_LIMIT` and `MAX_VOXELS_CAP` (the
    cap when memory is unknown); `slabs`: the networks run by slabs (see `BYTES_PER_SCN_INPUT_VOXEL`);
    `allocator_name`: TensorFlow's allocator (default: this process's, `allocator`)."""
    memory = memory_bytes() if memory is None else memory
    if memory is None:
        return VoxelLimit(MAX_VOXELS_CAP, "the largest size inference is tested for (the memory is unknown)")
    allocator_name = allocator_name or allocator()

    def fits(voxels: int) -> bool:
        return peak_memory_bytes(voxels, slabs=slabs, allocator_name=allocator_name) <= memory

    if fits(MAX_VOXELS_CAP):
        return VoxelLimit(MAX_VOXELS_CAP, "the largest size inference is tested for")
    if not fits(MIN_VOXELS_LIMIT + 1):
        return VoxelLimit(MIN_VOXELS_LIMIT, "the size always tried, however little memory there is")
    low, high = MIN_VOXELS_LIMIT + 1, MAX_VOXELS_CAP  # the model grows with the voxels above MIN_VOXELS_LIMIT
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return VoxelLimit(
        low,
        f"what {memory / 1e9:.1f} GB of memory (this machine's, or its container's limit) holds at "
        f"{BASE_MEMORY_BYTES[allocator_name] / 1e9:.2f} GB plus about {BYTES_PER_VOXEL} bytes per voxel "
        "(the README's memory model)",
    )
