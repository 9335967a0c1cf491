"""Image-grid geometry in plain NumPy: spacings, valid network sizes, bounding boxes, physical <-> index mapping.

Axis order: a `Grid` and every tuple named `*_xyz` follow SimpleITK (x, y, z); arrays named `*_zyx` follow
NumPy / `sitk.GetArrayFromImage` (z, y, x). Physical points are in mm, in the ITK (LPS) world frame:
``point = origin + direction @ (spacing * index)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

logger = logging.getLogger(__name__)

FLARE21_MEAN_SPACING_XYZ: tuple[float, float, float] = (0.814528640267884, 0.814528640267884, 2.52795318268203)
"""Mean spacing of the FLARE21 training CTs; the original substitutes it for a header spacing of exactly 1,1,1."""

DIRECTION_TOLERANCE = 1e-3
"""Largest deviation of DᵀD from the identity that still counts as an orthonormal direction matrix."""


@dataclass(frozen=True)
class Grid:
    """Where a 3-D image lies in space: size (voxels), spacing (mm), origin (mm) and direction, all xyz.

    `direction` is SimpleITK's row-major 3x3 matrix whose columns are the physical directions of the index axes.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def direction_matrix(self) -> np.ndarray:
        """The 3x3 direction matrix (columns: index axes x, y, z in physical space)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_physical(self, index_xyz: np.ndarray | Sequence[float]) -> np.ndarray:
        """Physical points (..., 3) in mm of continuous indices (..., 3), both xyz."""
        index = np.asarray(index_xyz, dtype=np.float64)
        return np.asarray(self.origin) + (index * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_to_index(self, points_xyz: np.ndarray | Sequence[float]) -> np.ndarray:
        """Continuous indices (..., 3) of physical points (..., 3) in mm, both xyz; the inverse of index_to_physical."""
        points = np.asarray(points_xyz, dtype=np.float64) - np.asarray(self.origin)
        return np.linalg.solve(self.direction_matrix, points.reshape(-1, 3).T).T.reshape(points.shape) / np.asarray(
            self.spacing
        )

    def differences(self, other: Grid, tolerance: float = 1e-4) -> list[str]:
        """What differs between two grids, one phrase per property; empty when they match.

        Spacing and origin are compared relative to the spacing (`tolerance` x spacing), the direction absolutely.
        """
        found = []
        if self.size != other.size:
            found.append(f"size {self.size} != {other.size}")
        scale = np.asarray(self.spacing)
        if not np.allclose(self.spacing, other.spacing, rtol=0, atol=tolerance * scale.max()):
            found.append(f"spacing {_fmt_pair(self.spacing, other.spacing)}")
        if not np.allclose(self.origin, other.origin, rtol=0, atol=tolerance * scale.max()):
            found.append(f"origin {_fmt_pair(self.origin, other.origin)}")
        if not np.allclose(self.direction, other.direction, rtol=0, atol=tolerance):
            found.append(f"direction {_fmt_pair(self.direction, other.direction)}")
        return found


def grid_of(image: sitk.Image) -> Grid:
    """The geometry of a 3-D SimpleITK image."""
    return Grid(
        size=tuple(int(s) for s in image.GetSize()),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in image.GetSpacing()),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in image.GetDirection()),
    )


def _fmt(values: Sequence[float], digits: int = 6) -> str:
    return "(" + ", ".join(f"{v:.{digits}g}" for v in values) + ")"


def _fmt_pair(values: Sequence[float], others: Sequence[float]) -> str:
    """`values != others`, with as many significant digits as show where they differ (a far origin that a float32
    header moved by a few micrometres needs ten), and the largest difference."""
    digits = next((d for d in range(6, 18) if _fmt(values, d) != _fmt(others, d)), 17)
    largest = float(np.abs(np.subtract(values, others)).max())
    return f"{_fmt(values, digits)} != {_fmt(others, digits)} (differ by up to {largest:.3g})"


def is_orthonormal(direction: Sequence[float], tolerance: float = DIRECTION_TOLERANCE) -> bool:
    """Whether a row-major 3x3 direction matrix is orthonormal (rotation or reflection) within `tolerance`."""
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    return bool(np.abs(matrix.T @ matrix - np.eye(3)).max() <= tolerance)


SpacingFallback = Literal["missing", "always", "never"]
SPACING_FALLBACKS: tuple[SpacingFallback, ...] = get_args(SpacingFallback)
"""When a spacing of exactly 1,1,1 mm is replaced by the FLARE21 mean: "missing", only where the file evidently
stores no spacing (docs/fidelity.md #13); "always", the original's rule; "never", the header is trusted."""


def uses_spacing_fallback(spacing_xyz: Sequence[float], policy: str, *, stored: bool) -> bool:
    """Whether `policy` replaces this header spacing by the FLARE21 mean (`stored`: the file holds a spacing)."""
    if policy not in SPACING_FALLBACKS:
        raise ValueError(f"spacing fallback {policy!r} is not one of {', '.join(SPACING_FALLBACKS)}")
    exactly_one = tuple(float(s) for s in spacing_xyz) == (1.0, 1.0, 1.0)
    return exactly_one and (policy == "always" or (policy == "missing" and not stored))


def spacing_with_fallback(spacing_xyz: Sequence[float], source: str) -> tuple[float, float, float]:
    """The spacing to process an image with by the original's rule: the header's, or the FLARE21 mean when the
    header says exactly 1,1,1 (`CanonicalCT` applies the rule only where a file stores no spacing).

    The substitution is logged as a warning naming `source`. The image's own geometry is never changed by this.
    """
    spacing = tuple(float(s) for s in spacing_xyz)
    if spacing == (1.0, 1.0, 1.0):
        logger.warning(
            "%s: spacing is exactly 1,1,1 mm, taken as a missing header value; processing with the FLARE21 mean "
            "spacing %s mm instead",
            source,
            _fmt(FLARE21_MEAN_SPACING_XYZ),
        )
        return FLARE21_MEAN_SPACING_XYZ
    return spacing  # type: ignore[return-value]


def valid_size(size: float, valid_sizes: Sequence[int]) -> int:
    """The smallest valid size strictly greater than `size`, or the largest valid size if none is.

    Strictly greater, as the original: an exact fit moves on to the next valid size (docs/fidelity.md #1, kept
    because it decides the network input sizes users compare with the paper).
    """
    ordered = sorted(valid_sizes)
    if not ordered:
        raise ValueError("valid_sizes is empty")
    return next((v for v in ordered if v > size), ordered[-1])


def valid_sizes_per_axis(sizes: Sequence[float], valid_sizes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """`valid_size` applied per axis; `sizes` and `valid_sizes` share one axis order."""
    if len(sizes) != len(valid_sizes):
        raise ValueError(f"{len(sizes)} sizes but {len(valid_sizes)} valid-size lists")
    return tuple(valid_size(s, v) for s, v in zip(sizes, valid_sizes, strict=True))


def shrink_factors(spacing_xyz: Sequence[float], target_spacing_mm: float) -> tuple[int, ...]:
    """Integer subsampling factor per axis for the `_small` images: 2 where target/spacing > 2, else 1.

    With the 6 mm localization spacing this halves every axis finer than 3 mm (a 0.8/0.8/2.5 mm CT becomes
    1.6/1.6/5 mm), which is all the original's preprocessing does to make localization loading cheap.
    """
    return tuple(2 if target_spacing_mm / float(s) > 2 else 1 for s in spacing_xyz)


def bounding_box_index(mask_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Inclusive (start, end) voxel indices, zyx, of the nonzero voxels of a 3-D mask; None if it is empty."""
    if mask_zyx.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {mask_zyx.shape}")
    starts, ends = [], []
    for axis in range(3):
        other_axes = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(np.any(mask_zyx, axis=other_axes))
        if occupied.size == 0:
            return None
        starts.append(occupied[0])
        ends.append(occupied[-1])
    return np.asarray(starts), np.asarray(ends)


def physical_bounding_box(mask_zyx: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned physical box (min_xyz, max_xyz) in mm around the centres of a mask's nonzero voxels.

    The eight corners of the index box are mapped to physical space and the box is taken around them. For the
    axis-aligned grids of FLARE21 this is exactly the original's `landmark_bb.csv` box (the two extreme voxel
    centres, swapped per axis where the direction flips); on an oblique grid it still encloses every organ voxel,
    where two mapped corners alone would not (docs/fidelity.md #25). Returns None for an empty mask.
    """
    box = bounding_box_index(mask_zyx)
    if box is None:
        return None
    return physical_box(grid, box[0][::-1], box[1][::-1])


def physical_box(grid: Grid, start_xyz: Sequence[float], end_xyz: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(min_xyz, max_xyz) in mm of the physical positions of the 8 corners of the index box start..end (xyz,
    inclusive): on an oblique grid the axis-aligned box that encloses every index of it."""
    points = grid.index_to_physical(box_corners(start_xyz, end_xyz))
    return points.min(axis=0), points.max(axis=0)


def box_corners(start: Sequence[float], end: Sequence[float]) -> np.ndarray:
    """The 8 corners (8, 3) of the box spanned by `start` and `end` (any one axis order, kept)."""
    return np.array([[(start, end)[c][axis] for axis, c in enumerate(bits)] for bits in np.ndindex(2, 2, 2)], float)


OBLIQUE_TOLERANCE_DEGREES = 1.0
"""An image whose index axes lie further than this from their nearest patient axes counts as oblique."""


def obliquity_degrees(direction: Sequence[float]) -> float:
    """The largest angle (degrees) between an index axis of a row-major 3x3 direction and its nearest patient axis."""
    nearest_cosine = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3)).max(axis=0).min()
    return float(np.degrees(np.arccos(np.clip(nearest_cosine, 0.0, 1.0))))


def axis_aligned_grid(grid: Grid) -> Grid:
    """The identity-direction grid covering every voxel centre of `grid`, each patient axis with the spacing of the
    index axis nearest to it: where an oblique CT is resampled so its patient lies as the networks learnt it."""
    low, high = physical_box(grid, np.zeros(3), np.asarray(grid.size) - 1.0)
    spacing = np.asarray(grid.spacing)[np.abs(grid.direction_matrix).argmax(axis=1)]
    size = np.ceil((high - low) / spacing - 1e-6).astype(int) + 1
    return Grid(
        size=tuple(int(s) for s in size),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in low),  # type: ignore[arg-type]
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
