"""Spatial augmentation in physical space: a random affine and B-spline transform per sample, and resampling.

Every transform here maps OUTPUT physical points to INPUT physical points (mm, xyz), SimpleITK's resampling
convention. The output grid always has origin 0 and the identity direction; its size (voxels) and spacing (mm)
are given xyz. Arrays come back zyx, as from `sitk.GetArrayFromImage`. NumPy and SimpleITK only: this runs in
data-loader worker processes, which must not import TensorFlow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from efficientscn.imaging.geometry import Grid, grid_of
from efficientscn.imaging.resample import AIR_HU, Interpolator, resample_onto

logger = logging.getLogger(__name__)

_IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_OUTPUT_ORIGIN = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class SpatialAugmentConfig:
    """Ranges of the random spatial augmentation, the paper's values by default; all ranges 0 give pure centring.

    Translation, rotation and the scales are drawn uniformly in ±range, independently per axis where it says so.
    A scale factor f > 1 makes the output cover f times more input mm (the anatomy looks smaller).
    The B-spline has `deformation_grid_nodes` control points per axis spanning the output domain, each moved by
    U[±deformation_mm] per axis. `field_sampling` is the output-voxel step of the dense displacement field
    that stands in for the composite transform when resampling (see `to_displacement_field`).
    """

    translation_mm: float = 20.0
    rotation_rad: float = 0.35
    uniform_scale: float = 0.2
    axis_scale: float = 0.1
    deformation_grid_nodes: int = 8
    deformation_mm: float = 15.0
    deformation_spline_order: int = 2
    field_sampling: int = 2

    def __post_init__(self) -> None:
        for name in ("translation_mm", "rotation_rad", "uniform_scale", "axis_scale", "deformation_mm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite range >= 0, got {value}")
        if self.uniform_scale >= 1 or self.axis_scale >= 1:
            raise ValueError("scale ranges must stay below 1 (a scale factor must remain positive)")
        if not 1 <= self.deformation_spline_order <= 3:
            raise ValueError(f"deformation_spline_order must be 1..3, got {self.deformation_spline_order}")
        if self.deformation_grid_nodes <= self.deformation_spline_order:
            raise ValueError("deformation_grid_nodes must exceed deformation_spline_order")
        if self.field_sampling < 1:
            raise ValueError(f"field_sampling must be >= 1, got {self.field_sampling}")


def image_center(grid: Grid) -> np.ndarray:
    """Physical centre (mm, xyz) of a grid: the middle of its first and last voxel centres."""
    return grid.index_to_physical((np.asarray(grid.size, dtype=np.float64) - 1) / 2)


def output_center(output_size_xyz: Sequence[int], output_spacing_xyz: Sequence[float]) -> np.ndarray:
    """Physical centre (mm, xyz) of an output grid (origin 0, identity direction)."""
    return (np.asarray(output_size_xyz, dtype=np.float64) - 1) / 2 * np.asarray(output_spacing_xyz, dtype=np.float64)


def field_grid(
    output_size_xyz: Sequence[int], output_spacing_xyz: Sequence[float], sampling: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Size and spacing (xyz) of the coarse displacement-field grid: every `sampling`-th output voxel.

    It has one node more than the voxels it starts on wherever that is needed to reach the last output voxel, so
    the field is interpolated, never extrapolated, at the border.
    """
    size = tuple(math.ceil((int(s) - 1) / sampling) + 1 for s in output_size_xyz)
    return size, tuple(float(s) * sampling for s in output_spacing_xyz)


def _rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z (angles in rad), as one 3x3 matrix acting on column vectors."""
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_bspline(
    output_size_xyz: Sequence[int],
    output_spacing_xyz: Sequence[float],
    config: SpatialAugmentConfig,
    rng: np.random.Generator,
) -> sitk.BSplineTransform:
    """A random B-spline displacement over the output domain (control coefficients uniform in ±deformation_mm).

    The domain runs from the first output voxel centre to the last node of the coarse field grid, which is the
    last voxel centre when `field_sampling` divides size - 1; so the dense field never samples outside it
    (where ITK's B-spline would suddenly give zero displacement). The original's spans output size x spacing
    (docs/fidelity.md #26).
    """
    size, spacing = field_grid(output_size_xyz, output_spacing_xyz, config.field_sampling)
    extent = [max((n - 1) * s, s) for n, s in zip(size, spacing, strict=True)]
    order = config.deformation_spline_order
    bspline = sitk.BSplineTransform(3, order)
    bspline.SetTransformDomainOrigin(_OUTPUT_ORIGIN)
    bspline.SetTransformDomainDirection(_IDENTITY_DIRECTION)
    bspline.SetTransformDomainPhysicalDimensions(extent)
    bspline.SetTransformDomainMeshSize([config.deformation_grid_nodes - order] * 3)
    coefficients = rng.uniform(-config.deformation_mm, config.deformation_mm, bspline.GetNumberOfParameters())
    bspline.SetParameters(coefficients.tolist())
    return bspline


def sample_transform(
    input_image: sitk.Image | Grid,
    output_size_xyz: Sequence[int],
    output_spacing_xyz: Sequence[float],
    config: SpatialAugmentConfig | None = None,
    rng: np.random.Generator | None = None,
    *,
    center_xyz: Sequence[float] | None = None,
    fixed_scale: float = 1.0,
) -> sitk.CompositeTransform:
    """The output -> input transform of one sample.

    In the order it acts on an output point: the random B-spline, output centre to origin, scale (per-axis times
    uniform times `fixed_scale`), rotation, random translation, origin to the input centre. The input centre is
    the image's own centre, or `center_xyz` (mm, physical, e.g. an organ box centre). Without `config` or `rng`
    it is the validation/test transform: centre to centre, scaled by `fixed_scale` (> 1 zooms out, so a large
    region still fits the output), never deformed.
    """
    if not (math.isfinite(fixed_scale) and fixed_scale > 0):
        raise ValueError(f"fixed_scale must be positive, got {fixed_scale}")
    grid = input_image if isinstance(input_image, Grid) else grid_of(input_image)
    center_in = image_center(grid) if center_xyz is None else np.asarray(center_xyz, dtype=np.float64)
    center_out = output_center(output_size_xyz, output_spacing_xyz)
    matrix = np.eye(3) * fixed_scale
    translation = np.zeros(3)
    deformation = None
    if config is not None and rng is not None:
        translation = rng.uniform(-config.translation_mm, config.translation_mm, 3)
        angles = rng.uniform(-config.rotation_rad, config.rotation_rad, 3)
        uniform = 1 + rng.uniform(-config.uniform_scale, config.uniform_scale)
        per_axis = 1 + rng.uniform(-config.axis_scale, config.axis_scale, 3)
        matrix = _rotation_matrix(angles) @ np.diag(per_axis * uniform * fixed_scale)
        if config.deformation_mm > 0:
            deformation = _random_bspline(output_size_xyz, output_spacing_xyz, config, rng)
        logger.debug(
            "spatial sample: translation %s mm, rotation %s rad, scale %s",
            np.round(translation, 2),
            np.round(angles, 3),
            np.round(per_axis * uniform, 3),
        )
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation((center_in + translation - matrix @ center_out).tolist())
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    if deformation is not None:
        composite.AddTransform(deformation)  # added last, so applied first: it deforms the output domain
    return composite


def to_displacement_field(
    transform: sitk.Transform,
    output_size_xyz: Sequence[int],
    output_spacing_xyz: Sequence[float],
    sampling: int = 2,
) -> sitk.DisplacementFieldTransform:
    """`transform` sampled as a displacement field at every `sampling`-th output voxel, interpolated linearly.

    Resampling through it costs one trilinear lookup per voxel instead of a B-spline evaluation; compute it once
    per sample and pass it to `resample(..., dense_field=False)` for both image and label.
    """
    size, spacing = field_grid(output_size_xyz, output_spacing_xyz, sampling)
    field = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, size, _OUTPUT_ORIGIN, spacing, _IDENTITY_DIRECTION
    )
    dense = sitk.DisplacementFieldTransform(field)
    dense.SetInterpolator(sitk.sitkLinear)
    return dense


def resample(
    image: sitk.Image,
    transform: sitk.Transform,
    output_size_xyz: Sequence[int],
    output_spacing_xyz: Sequence[float],
    interpolator: Interpolator = "linear",
    default_value: float = AIR_HU,
    dense_field: bool = True,
    field_sampling: int = 2,
) -> np.ndarray:
    """`image` resampled onto the output grid through `transform`, as a zyx array.

    Linear gives float32 (CT: default -1024 HU outside); nearest keeps the pixel type (labels: default 0).
    With `dense_field` the transform is first replaced by `to_displacement_field(..., field_sampling)`; a
    transform that already is a displacement field is used as it is.
    """
    if dense_field and not isinstance(transform, sitk.DisplacementFieldTransform):
        transform = to_displacement_field(transform, output_size_xyz, output_spacing_xyz, field_sampling)
    grid = Grid(
        size=tuple(int(s) for s in output_size_xyz),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in output_spacing_xyz),  # type: ignore[arg-type]
        origin=_OUTPUT_ORIGIN,
        direction=_IDENTITY_DIRECTION,
    )
    pixel_type = sitk.sitkFloat32 if interpolator == "linear" else image.GetPixelID()
    resampled = resample_onto(image, grid, interpolator, default_value, transform=transform, pixel_type=pixel_type)
    return sitk.GetArrayFromImage(resampled)


def resample_image_and_label(
    image: sitk.Image,
    label: sitk.Image,
    transform: sitk.Transform,
    output_size_xyz: Sequence[int],
    output_spacing_xyz: Sequence[float],
    field_sampling: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """A CT (linear, -1024 HU outside, float32) and its label map (nearest, 0 outside) through one transform, zyx.

    With `field_sampling` the transform is first sampled once as a displacement field (see `to_displacement_field`)
    that serves both, as training samples do; None resamples through `transform` itself (test samples).
    """
    if field_sampling is not None:
        transform = to_displacement_field(transform, output_size_xyz, output_spacing_xyz, field_sampling)
    size, spacing = output_size_xyz, output_spacing_xyz
    resampled_image = resample(image, transform, size, spacing, "linear", AIR_HU, dense_field=False)
    return resampled_image, resample(label, transform, size, spacing, "nearest", 0, dense_field=False)
