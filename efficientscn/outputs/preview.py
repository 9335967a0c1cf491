"""Quick-look PNG of a segmented CT: an axial and a coronal slice with the organs overlaid, SimpleITK only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.atomic import atomic_output
from efficientscn.imaging.itk_path import itk_path
from efficientscn.labels import ORGANS

logger = logging.getLogger(__name__)

WINDOW_HU = (40.0, 400.0)
"""Soft-tissue window (level, width) for the grey CT."""

ALPHA = 0.45
"""Opacity of the organ fill; the outlines are opaque."""

LABEL_COLOURS = np.array([(0, 0, 0), *(organ.colour_rgb for organ in ORGANS.values())], dtype=np.float64)
"""RGB per label value: background (unused), then each organ's colour (`labels.ORGANS`)."""

MAX_SIDE = 512
"""Longest side of each view in pixels."""

GAP_PIXELS = 4
"""Black gap between the two views."""


def _to_square_pixels(plane: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Nearest-neighbour resample of a 2-D slice to square pixels, so anatomy keeps its physical proportions.

    The pixel size is the finer of the two spacings (no invented detail), enlarged if needed so that the longer
    side stays within `MAX_SIDE`.
    """
    height_mm, width_mm = plane.shape[0] * row_mm, plane.shape[1] * col_mm
    pixel_mm = max(min(row_mm, col_mm), max(height_mm, width_mm) / MAX_SIDE)
    rows = np.minimum(
        ((np.arange(max(1, round(height_mm / pixel_mm))) + 0.5) * pixel_mm / row_mm).astype(int), plane.shape[0] - 1
    )
    cols = np.minimum(
        ((np.arange(max(1, round(width_mm / pixel_mm))) + 0.5) * pixel_mm / col_mm).astype(int), plane.shape[1] - 1
    )
    return plane[np.ix_(rows, cols)]


HATCH_PERIOD = 8
"""Pixels between the diagonal stripes of a hatched organ; half of each period is left without fill."""


def _render(ct: np.ndarray, label: np.ndarray, hatched: Sequence[int] = ()) -> np.ndarray:
    """RGB uint8 of a windowed CT slice with a translucent fill and an opaque outline per organ; the organs whose
    label values are in `hatched` get their fill in diagonal stripes only."""
    level, width = WINDOW_HU
    grey = np.clip((ct.astype(np.float64) - (level - width / 2)) / width, 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    organ = label > 0
    colour = LABEL_COLOURS[label]
    rows, cols = np.indices(label.shape)
    gaps = np.isin(label, list(hatched)) & ((rows + cols) % HATCH_PERIOD >= HATCH_PERIOD // 2)
    fill = organ & ~gaps
    rgb[fill] = (1.0 - ALPHA) * rgb[fill] + ALPHA * colour[fill]
    padded = np.pad(label, 1, mode="edge")
    edge = organ & (
        (padded[:-2, 1:-1] != label)
        | (padded[2:, 1:-1] != label)
        | (padded[1:-1, :-2] != label)
        | (padded[1:-1, 2:] != label)
    )
    rgb[edge] = colour[edge]
    return np.rint(rgb).astype(np.uint8)


def _centre_of_mass(mask: np.ndarray) -> np.ndarray:
    """The rounded centre of mass (z, y, x) of a mask, from its per-axis sums; the volume centre if empty."""
    total = np.count_nonzero(mask)
    if not total:
        return np.array(mask.shape) // 2
    others = ((1, 2), (0, 2), (0, 1))
    profiles = [mask.sum(axis=axes) for axes in others]  # voxels per index along z, y, x
    return np.array([round(float(profile @ np.arange(profile.size)) / total) for profile in profiles])


def write_preview(
    ct: np.ndarray,
    label: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    path: Path,
    *,
    overwrite: bool = False,
    hatched: Sequence[int] = (),
) -> Path:
    """Write a PNG with an axial (left) and a coronal (right) slice through the centre of the labelled organs.

    `ct` (HU) and `label` are zyx arrays on the canonical LPS grid, so the axial view is already radiological
    (patient right on the image left, anterior at the top); the coronal view is flipped to put superior at the
    top. Both cut through the label's centre of mass, or the volume centre when the label is empty. The views are
    top-aligned, padded to the same height, with `GAP_PIXELS` black columns between them. The organs whose label
    values are in `hatched` (those cut off by the scan) are filled in diagonal stripes. An existing `path` raises
    FileExistsError unless `overwrite`.
    """
    ct, label = np.asarray(ct), np.asarray(label)
    if ct.ndim != 3 or ct.shape != label.shape:
        raise ValueError(f"ct {ct.shape} and label {label.shape} must be 3-D zyx arrays of the same shape")
    if len(spacing_zyx) != 3 or min(spacing_zyx) <= 0:
        raise ValueError(f"spacing_zyx {spacing_zyx} must be three positive sizes in mm")
    centre = _centre_of_mass(label > 0)
    z, y, _ = centre
    dz, dy, dx = spacing_zyx
    views = [
        _render(_to_square_pixels(ct[z], dy, dx), _to_square_pixels(label[z], dy, dx), hatched),
        _render(_to_square_pixels(ct[::-1, y], dz, dx), _to_square_pixels(label[::-1, y], dz, dx), hatched),
    ]
    height = max(view.shape[0] for view in views)
    gap = np.zeros((height, GAP_PIXELS, 3), dtype=np.uint8)
    padded = [np.pad(view, ((0, height - view.shape[0]), (0, 0), (0, 0))) for view in views]
    canvas = np.concatenate([padded[0], gap, padded[1]], axis=1)
    path = Path(path)
    # through a link with a plain name if ITK cannot take the real one
    with atomic_output(path, suffix=".png", overwrite=overwrite) as temporary, itk_path(temporary) as writable:
        sitk.WriteImage(sitk.GetImageFromArray(canvas, isVector=True), str(writable))
    logger.info("wrote preview %s (%d x %d pixels, centre zyx %s)", path, canvas.shape[1], height, centre.tolist())
    return path
