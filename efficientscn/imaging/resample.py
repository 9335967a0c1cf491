"""Resampling: one helper puts an image onto a grid (through a transform, if given): oblique CTs onto an
axis-aligned grid and their labels back, training samples, and training's test predictions back onto their CT.
Everything outside a CT is air, `AIR_HU`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import SimpleITK as sitk

from efficientscn.imaging.geometry import Grid, grid_of

AIR_HU = -1024
"""What a CT holds where the scan has no data: padding, resampling beyond its edge, an oblique CT's corners."""

Interpolator = Literal["linear", "nearest"]
_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


def resample_onto(
    image: sitk.Image,
    grid: Grid,
    interpolator: Interpolator,
    default: float,
    *,
    transform: sitk.Transform | None = None,
    pixel_type: int | None = None,
) -> sitk.Image:
    """`image` resampled onto `grid`; grid points are mapped through `transform` (None: the identity) into the
    image, points outside it get `default`. The output keeps the image's pixel type unless `pixel_type` is given."""
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {sorted(_INTERPOLATORS)}, got {interpolator!r}")
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in grid.size])
    resampler.SetOutputSpacing([float(s) for s in grid.spacing])
    resampler.SetOutputOrigin([float(o) for o in grid.origin])
    resampler.SetOutputDirection([float(d) for d in grid.direction])
    resampler.SetTransform(transform if transform is not None else sitk.Transform())
    resampler.SetInterpolator(_INTERPOLATORS[interpolator])
    resampler.SetDefaultPixelValue(float(default))
    resampler.SetOutputPixelType(image.GetPixelID() if pixel_type is None else pixel_type)
    return resampler.Execute(image)


def resample_to_input(
    output_array: np.ndarray,
    transform: sitk.Transform,
    output_spacing_xyz: Sequence[float],
    input_image: sitk.Image | Grid,
    interpolator: Interpolator = "linear",
    default_value: float = 0.0,
) -> np.ndarray:
    """An output-space array (zyx, optionally channels-last; origin 0, identity direction) moved onto the input
    image's grid, zyx(+channels), through the inverse of the sample `transform` (output -> input points).

    Only invertible (affine, not deformed) transforms work; others raise ValueError. Linear (for logits or
    probabilities) gives float32; nearest keeps the dtype (float16 -> float32).
    """
    if output_array.ndim not in (3, 4):
        raise ValueError(f"expected a zyx array with an optional channel axis, got shape {output_array.shape}")
    try:
        inverse = transform.GetInverse()
    except RuntimeError as error:
        raise ValueError("the transform has no inverse (it contains a B-spline deformation?)") from error
    values = output_array
    if interpolator == "linear" or values.dtype == np.float16:
        values = values.astype(np.float32, copy=False)
    source = sitk.GetImageFromArray(np.ascontiguousarray(values), isVector=values.ndim == 4)
    source.SetSpacing([float(s) for s in output_spacing_xyz])
    grid = input_image if isinstance(input_image, Grid) else grid_of(input_image)
    return sitk.GetArrayFromImage(resample_onto(source, grid, interpolator, default_value, transform=inverse))


def labels_on_input(
    scores: np.ndarray, transform: sitk.Transform, output_spacing_xyz: Sequence[float], input_image: sitk.Image
) -> sitk.Image:
    """The argmax label map (uint8) on `input_image`'s grid of output-space per-label scores (z, y, x, C).

    The scores (logits or probabilities) are resampled linearly onto the input grid first, as the original maps
    predictions back; outside the output grid every score is 0, so the argmax there is label 0 (background).
    """
    on_input = resample_to_input(scores, transform, output_spacing_xyz, input_image, "linear")
    labels = sitk.GetImageFromArray(np.argmax(on_input, axis=-1).astype(np.uint8))
    labels.CopyInformation(input_image)
    return labels
