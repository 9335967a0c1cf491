"""The canonical (LPS) view of a CT and its exact inverse; `CanonicalCT`, a CT's one way onto the processing grid.

`CanonicalCT.read` reads a CT (with the header checks), resamples an oblique one onto an axis-aligned grid, views
it in LPS orientation without a copy and takes its spacing (with the FLARE21 fallback); `restore` puts a label on
that canonical grid back onto the exact grid of the CT as read. `predict`, the benchmarks and Python users all go
through it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.buffers import voxels_of
from efficientscn.imaging.geometry import (
    OBLIQUE_TOLERANCE_DEGREES,
    Grid,
    SpacingFallback,
    axis_aligned_grid,
    grid_of,
    obliquity_degrees,
    spacing_with_fallback,
    uses_spacing_fallback,
)
from efficientscn.imaging.read import header_size, read_ct, spacing_is_stored
from efficientscn.imaging.resample import AIR_HU, resample_onto

logger = logging.getLogger(__name__)

CANONICAL_ORIENTATION = "LPS"
"""Processing orientation: index axes run towards patient left, posterior, superior (ITK's identity direction)."""


CONTIGUOUS_COPY_MAX_VOXELS = 64 * 2**20
"""The largest label `Reorientation.to_original_image` reorders through a contiguous copy (a 512 x 512 x 256 scan)."""


@dataclass(frozen=True)
class Reorientation:
    """How an image's voxels were permuted and flipped into the canonical LPS orientation, and the way back.

    `permute_order_xyz[i]` is the input axis that became canonical axis i; `flip_axes_xyz[i]` says whether
    canonical axis i was then reversed (both as SimpleITK's DICOMOrientImageFilter reports them).
    `original_grid` is the input's exact geometry, given back unchanged by `to_original_image`.
    """

    permute_order_xyz: tuple[int, int, int]
    flip_axes_xyz: tuple[bool, bool, bool]
    original_grid: Grid

    @property
    def canonical_spacing_xyz(self) -> tuple[float, float, float]:
        """The voxel spacing along the canonical axes."""
        spacing = self.original_grid.spacing
        return tuple(spacing[axis] for axis in self.permute_order_xyz)  # type: ignore[return-value]

    def _numpy_axes(self) -> tuple[list[int], tuple[int, ...]]:
        """The transpose (input array axis per canonical array axis) and the flipped canonical array axes, zyx."""
        transpose = [2 - self.permute_order_xyz[2 - axis] for axis in range(3)]
        flipped = tuple(axis for axis in range(3) if self.flip_axes_xyz[2 - axis])
        return transpose, flipped

    def to_canonical_array(self, array_zyx: np.ndarray) -> np.ndarray:
        """An array on the input grid moved onto the canonical grid (a view where possible)."""
        transpose, flipped = self._numpy_axes()
        return np.flip(np.transpose(array_zyx, transpose), axis=flipped)

    def to_original_array(self, array_zyx: np.ndarray) -> np.ndarray:
        """An array on the canonical grid moved back onto the input grid (a view where possible)."""
        transpose, flipped = self._numpy_axes()
        return np.transpose(np.flip(array_zyx, axis=flipped), np.argsort(transpose))

    def to_original_image(self, array_zyx: np.ndarray) -> sitk.Image:
        """An image on the input's exact grid (size, origin, spacing, direction) from an array on the canonical grid.

        Up to `CONTIGUOUS_COPY_MAX_VOXELS` NumPy reorders the voxels into a contiguous copy first, which SimpleITK
        takes whole (0.08 s for a 512 x 512 x 200 label); beyond, SimpleITK copies the flipped and transposed view
        voxel by voxel, four times slower but without the copy (for a 512 x 512 x 1208 label, 317 MB less at the
        peak of writing it)."""
        view = self.to_original_array(array_zyx)
        image = sitk.GetImageFromArray(np.ascontiguousarray(view) if view.size <= CONTIGUOUS_COPY_MAX_VOXELS else view)
        expected = self.original_grid.size
        if image.GetSize() != expected:
            raise ValueError(f"array of size {image.GetSize()} (xyz) after reorientation, expected {expected}")
        image.SetSpacing(self.original_grid.spacing)
        image.SetOrigin(self.original_grid.origin)
        image.SetDirection(self.original_grid.direction)
        return image


def _canonical_orienter() -> sitk.DICOMOrientImageFilter:
    orienter = sitk.DICOMOrientImageFilter()
    orienter.SetDesiredCoordinateOrientation(CANONICAL_ORIENTATION)
    return orienter


def _reorientation(orienter: sitk.DICOMOrientImageFilter, image: sitk.Image) -> Reorientation:
    return Reorientation(
        permute_order_xyz=tuple(int(a) for a in orienter.GetPermuteOrder()),  # type: ignore[arg-type]
        flip_axes_xyz=tuple(bool(f) for f in orienter.GetFlipAxes()),  # type: ignore[arg-type]
        original_grid=grid_of(image),
    )


def to_canonical(image: sitk.Image) -> tuple[sitk.Image, Reorientation]:
    """The image in canonical LPS orientation (axes permuted and flipped, voxels unchanged) and how to undo it.

    An axis-aligned image gets the identity direction; an oblique one keeps the rotation left after the nearest
    permutation (`CanonicalCT` resamples an oblique CT onto an axis-aligned grid first).
    """
    orienter = _canonical_orienter()
    canonical = orienter.Execute(image)
    return canonical, _reorientation(orienter, image)


def canonical_reorientation(image: sitk.Image) -> Reorientation:
    """How `to_canonical` reorients `image`, found without copying its voxels (it depends on the direction only).

    `Reorientation.to_canonical_array` then gives the canonical voxels as a view of the image's array.
    """
    probe = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    probe.SetDirection(image.GetDirection())
    orienter = _canonical_orienter()
    orienter.Execute(probe)
    return _reorientation(orienter, image)


def check_voxel_count(size: Sequence[int], max_voxels: int) -> None:
    """Refuse a CT of more than `max_voxels` (any axis order), with its size, before it is read where possible; a
    limit with a `reason` (inference's `VoxelLimit`) has it said."""
    voxels = math.prod(size)
    if voxels > max_voxels:
        reason = getattr(max_voxels, "reason", None)
        raise InputError(
            f"CT too large: {voxels:,} voxels (size {tuple(size)}); the limit is {max_voxels:,}"
            + (f", {reason}" if reason else "")
        )


@dataclass(frozen=True)
class WayBack:
    """How a label on the processing grid goes back onto the exact grid of the CT as read. It holds none of the CT's
    voxels, so that they can be freed before the label is restored and written (`predict` does, where no output
    reads them)."""

    reorientation: Reorientation
    oblique_grid: Grid | None = None
    """The grid of an oblique CT as read, which the label is resampled onto; None if not oblique."""

    def restore(self, label_zyx: np.ndarray) -> sitk.Image:
        """A label on the canonical grid, put on the exact grid of the CT as read (size, spacing, origin,
        direction)."""
        label = self.reorientation.to_original_image(label_zyx)
        if self.oblique_grid is None:
            return label
        return resample_onto(label, self.oblique_grid, "nearest", 0)


@dataclass(frozen=True)
class CanonicalCT:
    """A CT on the processing grid (canonical LPS, axis-aligned) and the exact way back for its label.

    An oblique CT is first resampled (linear, air outside) onto an axis-aligned grid with its own spacings, since
    the networks learnt the patient axis-aligned (their training samples are drawn along the patient axes);
    treating its index axes as patient axes, as the original does, would show them a rotated patient
    (docs/fidelity.md #36). Its label goes back onto the grid as read by nearest neighbour.
    """

    image: sitk.Image
    """The CT processed: as read, or resampled onto an axis-aligned grid if oblique; `array_zyx` is a view of it."""
    array_zyx: np.ndarray
    """int16 HU on the canonical grid (z, y, x), a view of `image` without a copy."""
    spacing_zyx: tuple[float, float, float]
    """The spacing processed with: the header's, or the FLARE21 mean for a spacing of exactly 1,1,1 mm that the
    spacing fallback takes as missing (see `spacing_source`)."""
    reorientation: Reorientation
    spacing_source: str = "header"
    """Where `spacing_zyx` comes from: "header", or "FLARE21 mean" (for the report)."""
    oblique_grid: Grid | None = None
    """The grid of an oblique CT as read, where its label goes back to; None if not oblique."""
    oblique_image: sitk.Image | None = None
    """An oblique CT as read, kept only if asked (`keep_as_read`): organ statistics are measured on its grid."""
    reading_warnings: tuple[str, ...] = ()
    """What reading the file had to assume or choose, which the label depends on: the orientation of a NIfTI that
    states none, the series read from a folder of several. Each was logged as a warning; `predict` puts them in the
    case's report."""

    @property
    def image_as_read(self) -> sitk.Image:
        """The int16 CT on its grid as read, the grid of its label (for an oblique CT only if it was kept)."""
        if self.oblique_grid is None:
            return self.image
        if self.oblique_image is None:
            raise ValueError("an oblique CT as read is kept only when asked for (keep_as_read)")
        return self.oblique_image

    @classmethod
    def read(
        cls,
        path: str | os.PathLike[str],
        *,
        max_voxels: int | None = None,
        spacing_fallback: SpacingFallback = "missing",
        keep_as_read: bool = False,
    ) -> CanonicalCT:
        """Read a CT file or DICOM folder (see `read_ct`); a CT over `max_voxels` is refused from its header.

        `spacing_fallback` (see `SPACING_FALLBACKS`): by default a spacing of exactly 1,1,1 mm becomes the FLARE21
        mean only where the file evidently stores no spacing (`spacing_is_stored`). `keep_as_read`: see
        `from_image`."""
        if max_voxels is not None:
            check_voxel_count(header_size(path), max_voxels)
        notes: list[str] = []
        ct = read_ct(path, notes)
        stored = spacing_fallback != "missing" or ct.GetSpacing() != (1.0, 1.0, 1.0) or spacing_is_stored(path)
        canonical = cls.from_image(
            ct,
            str(path),
            max_voxels=max_voxels,
            spacing_fallback=spacing_fallback,
            spacing_stored=stored,
            keep_as_read=keep_as_read,
        )
        return replace(canonical, reading_warnings=tuple(notes))

    @classmethod
    def from_image(
        cls,
        ct: sitk.Image,
        source: str = "CT",
        *,
        max_voxels: int | None = None,
        spacing_fallback: SpacingFallback = "missing",
        spacing_stored: bool = True,
        keep_as_read: bool = False,
    ) -> CanonicalCT:
        """An int16 CT in memory onto the processing grid; `source` names it in messages. `spacing_stored`: whether
        its spacing was stored with it (in memory it is: a spacing of 1 mm then stands unless the fallback is
        "always"). `keep_as_read`: keep an oblique CT as read beside its resampled copy (`image_as_read`), 2 bytes
        per voxel more."""
        if max_voxels is not None:
            check_voxel_count(ct.GetSize(), max_voxels)
        oblique_grid, oblique_image = None, None
        angle = obliquity_degrees(ct.GetDirection())
        if angle > OBLIQUE_TOLERANCE_DEGREES:
            oblique_grid, oblique_image = grid_of(ct), ct if keep_as_read else None
            aligned = axis_aligned_grid(oblique_grid)
            if max_voxels is not None:
                check_voxel_count(aligned.size, max_voxels)
            logger.info(
                "%s: oblique by %.1f degrees, resampled onto an axis-aligned grid of %s", source, angle, aligned.size
            )
            ct = resample_onto(ct, aligned, "linear", AIR_HU)
        reorientation = canonical_reorientation(ct)
        spacing_xyz = reorientation.canonical_spacing_xyz
        spacing_source = "header"
        if uses_spacing_fallback(spacing_xyz, spacing_fallback, stored=spacing_stored):
            spacing_xyz, spacing_source = spacing_with_fallback(spacing_xyz, source), "FLARE21 mean"
        array = reorientation.to_canonical_array(voxels_of(ct))  # no copy of the CT
        return cls(ct, array, tuple(spacing_xyz)[::-1], reorientation, spacing_source, oblique_grid, oblique_image)

    @property
    def way_back(self) -> WayBack:
        """How its label goes back onto the grid of the CT as read, without the CT."""
        return WayBack(self.reorientation, self.oblique_grid)

    def restore(self, label_zyx: np.ndarray) -> sitk.Image:
        """A label on the canonical grid, put on the exact grid of the CT as read (see `WayBack.restore`)."""
        return self.way_back.restore(label_zyx)
