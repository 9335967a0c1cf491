"""Synthetic abdominal CT phantoms with known organ labels, on any grid (size, spacing, origin, direction).

The anatomy is defined in physical space (mm, LPS, relative to `centre_mm`): an elliptic body with a fat
layer, a spine, and ellipsoid organs with realistic HU in the FLARE label convention. Sampling the same anatomy
on different grids gives images whose labels agree in physical space, which is what geometry tests need;
shifting the anatomy gives known overlaps for metric and training tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

PHANTOM_AIR_HU = -1000
"""The phantoms' outside: near air (real CTs read -1024 beyond the body, `imaging.resample.AIR_HU`)."""


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid: label (0 for non-organ tissue), HU, centre and semi-axes in mm (xyz, LPS)."""

    label: int
    hu: float
    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]


# Patient left is +x, posterior is +y, superior is +z (LPS). Sizes are those of an adult abdomen.
ORGANS: tuple[Ellipsoid, ...] = (
    Ellipsoid(1, 60.0, (-65.0, -5.0, 40.0), (80.0, 70.0, 75.0)),  # liver, patient right
    Ellipsoid(2, 30.0, (-70.0, 55.0, -35.0), (28.0, 25.0, 50.0)),  # right kidney
    Ellipsoid(2, 30.0, (70.0, 55.0, -25.0), (28.0, 25.0, 50.0)),  # left kidney
    Ellipsoid(3, 45.0, (85.0, 35.0, 45.0), (40.0, 30.0, 55.0)),  # spleen, patient left
    Ellipsoid(4, 40.0, (10.0, 15.0, -5.0), (60.0, 13.0, 16.0)),  # pancreas, across the midline
)
BODY_SEMI_AXES_MM = (165.0, 125.0)
FAT_THICKNESS_MM = 15.0
SOFT_TISSUE_HU, FAT_HU, BONE_HU = 35.0, -95.0, 650.0
SPINE = Ellipsoid(0, BONE_HU, (0.0, 85.0, 0.0), (22.0, 22.0, 1e9))


@dataclass(frozen=True)
class PhantomGrid:
    """The grid to sample a phantom on, xyz; the grid centre is placed at `centre_mm`."""

    size: tuple[int, int, int] = (96, 80, 64)
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 5.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def origin(self) -> tuple[float, float, float]:
        """The physical position of voxel (0, 0, 0) that puts the grid centre at `centre_mm`."""
        half_extent = np.asarray(self.spacing_mm) * (np.asarray(self.size) - 1) / 2.0
        matrix = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        return tuple(float(v) for v in np.asarray(self.centre_mm) - matrix @ half_extent)  # type: ignore[return-value]


def _inside(points: np.ndarray, shape: Ellipsoid, shift: np.ndarray) -> np.ndarray:
    relative = (points - (np.asarray(shape.centre_mm) + shift)) / np.asarray(shape.semi_axes_mm)
    return np.einsum("...i,...i->...", relative, relative) <= 1.0


def make_phantom(
    grid: PhantomGrid = PhantomGrid(),
    *,
    shift_mm: Sequence[float] = (0.0, 0.0, 0.0),
    organs: Sequence[Ellipsoid] = ORGANS,
    noise_hu: float = 10.0,
    seed: int = 0,
) -> tuple[sitk.Image, sitk.Image]:
    """A phantom CT (int16 HU) and its FLARE label map (uint8) on `grid`.

    `shift_mm` moves the whole anatomy relative to the grid centre (xyz mm); `noise_hu` is the standard deviation of
    Gaussian noise added inside the body. Sampled slice by slice, so a 512x512x200 phantom needs no more memory
    than its two output arrays.
    """
    size_x, size_y, size_z = grid.size
    origin = np.asarray(grid.origin())
    axes = np.asarray(grid.direction, dtype=np.float64).reshape(3, 3) * np.asarray(grid.spacing_mm)
    shift = np.asarray(shift_mm, dtype=np.float64)
    body_centre = shift[:2]
    rng = np.random.default_rng(seed)
    ct = np.empty((size_z, size_y, size_x), dtype=np.int16)
    label = np.zeros((size_z, size_y, size_x), dtype=np.uint8)
    index_y, index_x = np.mgrid[0:size_y, 0:size_x].astype(np.float64)
    for z in range(size_z):
        points = origin + np.stack([index_x, index_y, np.full_like(index_x, z)], axis=-1) @ axes.T
        radial = np.hypot(*((points[..., :2] - body_centre) / np.asarray(BODY_SEMI_AXES_MM)).transpose(2, 0, 1))
        inner = radial <= 1.0 - FAT_THICKNESS_MM / BODY_SEMI_AXES_MM[1]
        hu = np.where(radial <= 1.0, FAT_HU, PHANTOM_AIR_HU).astype(np.float32)
        hu[inner] = SOFT_TISSUE_HU
        hu[_inside(points, SPINE, shift)] = BONE_HU
        for organ in organs:
            inside = _inside(points, organ, shift) & inner
            hu[inside] = organ.hu
            label[z][inside] = organ.label
        if noise_hu > 0:
            hu += np.where(radial <= 1.0, rng.normal(0.0, noise_hu, hu.shape), 0.0).astype(np.float32)
        ct[z] = np.rint(hu).astype(np.int16)
    images = (sitk.GetImageFromArray(ct), sitk.GetImageFromArray(label))
    for image in images:
        image.SetSpacing(grid.spacing_mm)
        image.SetOrigin(grid.origin())
        image.SetDirection(grid.direction)
    return images
