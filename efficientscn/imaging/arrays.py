"""A CT given as a NumPy array and its geometry, checked before SimpleITK sees it.

SimpleITK takes native-endian integer and float32/64 arrays and three finite numbers per vector; anything else ends
in its `TypeError` or `RuntimeError` with C++ source paths, or is silently cut to length (a fourth spacing value).
Here every such input is an `InputError` that names the CT and says what is wrong, and the arrays a CT may
reasonably come as (another byte order, float16) are read as the values they hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from efficientscn.errors import InputError


def ct_from_array(
    array: object,
    spacing: Sequence[float],
    origin: Sequence[float] | None,
    direction: Sequence[float] | None,
    name: str,
) -> sitk.Image:
    """A 3-D array indexed (z, y, x) with its spacing (x, y, z mm), origin (mm, default 0) and direction (9 cosines,
    default identity) as a SimpleITK image; `InputError` naming `name` for what cannot be a CT's voxels or grid.

    Integer and floating-point arrays of either byte order are taken (float16 as float32, exactly); boolean,
    complex, object, string and other arrays are refused with the reason.
    """
    values = _voxel_array(array, name)
    spacing_xyz = _numbers(spacing, 3, "spacing", name)
    if not all(s > 0 for s in spacing_xyz):
        raise InputError(f"{name}: spacing {spacing_xyz} is not positive (x, y, z mm)")
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing_xyz)
    if origin is not None:
        image.SetOrigin(_numbers(origin, 3, "origin", name))
    if direction is not None:
        image.SetDirection(_numbers(direction, 9, "direction", name))
    return image


def _voxel_array(array: object, name: str) -> np.ndarray:
    """`array` as a native-endian 3-D integer or float32/64 array SimpleITK takes, or `InputError` saying why not."""
    values = np.asarray(array)
    if values.ndim != 3:
        raise InputError(f"{name}: {values.ndim}-D array {values.shape}; expected a 3-D CT indexed (z, y, x)")
    if values.dtype == np.bool_:
        raise InputError(f"{name}: a boolean array (a mask?); expected a CT's values in HU")
    if values.dtype.kind not in "iuf":
        raise InputError(f"{name}: an array of {values.dtype} ({values.dtype.kind!r} kind); expected numbers in HU")
    if values.dtype.kind == "f" and values.dtype.itemsize < 4:
        return values.astype(np.float32)  # every float16 value exactly
    if values.dtype.itemsize > 8:
        raise InputError(f"{name}: an array of {values.dtype}; expected at most 64-bit numbers")
    return values.astype(values.dtype.newbyteorder("="), copy=False)


def _numbers(values: Sequence[float], count: int, what: str, name: str) -> tuple[float, ...]:
    """`count` finite numbers, or `InputError` naming `what` (spacing, origin, direction) and the CT."""
    try:
        if isinstance(values, str | bytes):
            raise TypeError("a string")
        numbers = tuple(float(value) for value in values)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name}: {what} {values!r} is not a sequence of {count} numbers") from error
    if len(numbers) != count:
        order = "a row-major 3x3 matrix" if count == 9 else "x, y, z"
        raise InputError(f"{name}: {what} has {len(numbers)} values {numbers}; expected {count} ({order})")
    if not all(math.isfinite(n) for n in numbers):
        raise InputError(f"{name}: {what} {numbers} is not finite")
    return numbers
