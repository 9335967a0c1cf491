"""The files of the test data that are made from others rather than stored: the geometry variants of the
TotalSegmentator CTs and a NIfTI copy of their DICOM series.

Each is made with plain SimpleITK, never with this package's code (which the tests check against them), exactly as the
published copies of the test data were made: `test_ct_data.py` compares the two voxel for voxel where a published copy
is found. A variant is the source CT resampled linearly (outside it: its lowest value) and its FLARE label by nearest
neighbour, onto:

- `lpi`, `asl`: the source's voxels reordered into that orientation (`sitk.DICOMOrient`, no resampling);
- `oblique`: the source's grid rotated 20 degrees about z then 10 degrees about x (in patient space), large enough
  to hold every voxel centre of the source;
- `aniso`: thick slices (7.5 mm from 3 mm, 5 mm from 2 mm) over the same extent, from the same first slice.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

Variant = Callable[[sitk.Image, bool], sitk.Image]
"""Makes a variant of an image; the flag says whether it is a label (nearest neighbour, 0 outside)."""


def _resampled(image: sitk.Image, grid: sitk.Image, is_label: bool) -> sitk.Image:
    if is_label:
        return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    lowest = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, lowest, image.GetPixelID())


def _reoriented(code: str) -> Variant:
    return lambda image, _is_label: sitk.DICOMOrient(image, code)


def _rotation_xz(x_degrees: float, z_degrees: float) -> np.ndarray:
    """The rotation about z by `z_degrees`, then about x by `x_degrees`."""
    a, b = np.deg2rad(x_degrees), np.deg2rad(z_degrees)
    about_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return about_x @ about_z


def _oblique(image: sitk.Image, is_label: bool) -> sitk.Image:
    direction = _rotation_xz(10.0, 20.0) @ np.reshape(image.GetDirection(), (3, 3))
    corners = itertools.product(*[(0, n - 1) for n in image.GetSize()])
    points = np.array([image.TransformContinuousIndexToPhysicalPoint([float(i) for i in c]) for c in corners])
    along_axes = points @ direction  # each corner's coordinates along the new grid's axes
    low, high = along_axes.min(axis=0), along_axes.max(axis=0)
    size = np.ceil((high - low) / np.array(image.GetSpacing())).astype(int) + 1
    grid = sitk.Image([int(n) for n in size], image.GetPixelID())
    grid.SetSpacing(image.GetSpacing())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin((direction @ low).tolist())
    return _resampled(image, grid, is_label)


def _thick_slices(thickness_mm: float) -> Variant:
    def make(image: sitk.Image, is_label: bool) -> sitk.Image:
        size, spacing = list(image.GetSize()), list(image.GetSpacing())
        size[2] = round(size[2] * spacing[2] / thickness_mm)
        spacing[2] = thickness_mm
        grid = sitk.Image(size, image.GetPixelID())
        grid.SetSpacing(spacing)
        grid.SetOrigin(image.GetOrigin())
        grid.SetDirection(image.GetDirection())
        return _resampled(image, grid, is_label)

    return make


def _as_read(image: sitk.Image, _is_label: bool) -> sitk.Image:
    return image


VARIANTS: dict[str, tuple[str, Variant]] = {
    "ts_example_ct_sm_lpi": ("ts_example_ct_sm", _reoriented("LPI")),
    "ts_example_ct_sm_asl": ("ts_example_ct_sm", _reoriented("ASL")),
    "ts_example_ct_sm_oblique": ("ts_example_ct_sm", _oblique),
    "ts_example_ct_sm_aniso": ("ts_example_ct_sm", _thick_slices(7.5)),
    "ts_example_ct_dicom_oblique": ("ts_example_ct_dicom", _oblique),
    "ts_example_ct_dicom_aniso": ("ts_example_ct_dicom", _thick_slices(5.0)),
}
"""Case ID of each geometry variant -> the case it is made from and how."""

DICOM_AS_NIFTI = "totalsegmentator/example_ct_dicom_as_nifti.nii.gz"
"""The DICOM series of ts_example_ct_dicom as SimpleITK (GDCM) reads it, stored as NIfTI."""


def derivations(cases: dict[str, dict]) -> dict[str, tuple[str, Variant, bool]]:
    """Each made file (path in the data folder) -> its source's path, how it is made, and whether it is a label."""
    made: dict[str, tuple[str, Variant, bool]] = {}
    if "ts_example_ct_dicom" in cases:
        made[DICOM_AS_NIFTI] = (cases["ts_example_ct_dicom"]["image"], _as_read, False)
    for case_id, (source_id, variant) in VARIANTS.items():
        if case_id not in cases or source_id not in cases:
            continue  # a data folder of other cases
        case, source = cases[case_id], cases[source_id]
        made[case["image"]] = (source["image"], variant, False)
        made[case["flare_label"]] = (source["flare_label"], variant, True)
    return made


def _read(path: Path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def make_file(relative: str, cases: dict[str, dict], data: Path, output: Path) -> Path:
    """Make the file `relative` of the test data from its source in `data`, at the same relative path in `output`
    (written whole under a temporary name first, so that a half-written file is never found)."""
    source, variant, is_label = derivations(cases)[relative]
    target = output / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial.nii.gz")
    sitk.WriteImage(variant(_read(data / source), is_label), str(partial), useCompression=True)
    os.replace(partial, target)
    return target
