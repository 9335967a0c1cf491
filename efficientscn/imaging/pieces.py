"""The connected pieces of a mask (26-connectivity), found a slab of slices at a time.

ITK's connected-component filter labels a whole mask with 32-bit labels: 4 bytes per voxel beside the mask and its
copy, 1.9 GB for an organ box spanning a 512 x 512 x 1208 scan. Here each slab of slices is labelled on its own and
the pieces that touch across a slab boundary (a voxel and any of its 9 neighbours in the next slice) are joined,
which gives the whole mask's pieces exactly, in memory for one slab.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

PIECES_SLAB = 32
"""Slices labelled at once in a large mask."""
PIECES_AT_ONCE_MAX_VOXELS = 16 * 2**20
"""The largest mask labelled in one piece (about 100 MB of ITK's labels and copies): one call, no joins, faster."""


def slab_depth(shape: tuple[int, ...]) -> int:
    """Slices of a mask of `shape` (z, y, x) to label at once: all up to `PIECES_AT_ONCE_MAX_VOXELS`, else
    `PIECES_SLAB`."""
    return shape[0] if int(np.prod(shape)) <= PIECES_AT_ONCE_MAX_VOXELS else PIECES_SLAB


def piece_sizes(mask_slices: Callable[[int, int], np.ndarray], depth: int, slab: int = PIECES_SLAB) -> np.ndarray:
    """The voxel counts of a 3-D mask's connected pieces (26-connectivity), largest first.

    `mask_slices(begin, end)` gives the mask's slices begin..end-1 (z, y, x; bool or 0/1), `depth` its slice count.
    """
    sizes: list[int] = []  # per piece found, by its number; joined pieces are counted at their root
    parent: list[int] = []
    previous: np.ndarray | None = None  # the last slice of the slab before, in piece numbers (0: outside)
    for begin in range(0, depth, slab):
        mask = np.asarray(mask_slices(begin, min(begin + slab, depth)), dtype=bool).view(np.uint8)
        labelled = sitk.ConnectedComponent(sitk.GetImageFromArray(mask), True)
        local = sitk.GetArrayViewFromImage(labelled)  # 1..n per slab, 0 outside
        values, found = np.unique(local, return_counts=True)  # hashed: faster than bincount on 32-bit labels
        counts = np.zeros(int(values[-1]) + 1, np.int64)
        counts[values] = found
        counts = counts[1:]
        offset = len(sizes)
        sizes.extend(int(count) for count in counts)
        parent.extend(range(offset, offset + len(counts)))
        first = np.where(local[0] > 0, local[0].astype(np.int64) + offset, 0)
        if previous is not None:
            for below, above in _touching(previous - 1, first - 1):
                _join(parent, sizes, int(below), int(above))
        previous = np.where(local[-1] > 0, local[-1].astype(np.int64) + offset, 0)
        del labelled, local
    roots = [piece for piece in range(len(parent)) if _root(parent, piece) == piece]
    return np.sort(np.array([sizes[root] for root in roots], dtype=np.int64))[::-1]


def _touching(below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """The distinct (piece below, piece above) pairs of two adjacent slices (piece numbers, -1 outside) whose voxels
    are 26-neighbours: the same (y, x) or one of its 8 neighbours."""
    height, width = below.shape
    span = int(max(below.max(), above.max())) + 1
    keys = []  # a pair as one number, below * span + above: np.unique of numbers is many times faster than of rows
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            lower = below[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)]
            upper = above[max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)]
            both = (lower >= 0) & (upper >= 0)
            keys.append(lower[both] * span + upper[both])
    return np.stack(np.divmod(np.unique(np.concatenate(keys)), span), axis=1)


def _root(parent: list[int], piece: int) -> int:
    while parent[piece] != piece:
        parent[piece] = parent[parent[piece]]  # halve the path on the way
        piece = parent[piece]
    return piece


def _join(parent: list[int], sizes: list[int], first: int, second: int) -> None:
    """One piece of two: the second's root under the first's, its voxels counted there."""
    first, second = _root(parent, first), _root(parent, second)
    if first != second:
        parent[second] = first
        sizes[first] += sizes[second]
