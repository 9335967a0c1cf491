"""Grid mapping, valid network sizes, shrink factors, bounding boxes and the spacing fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.geometry import (
    FLARE21_MEAN_SPACING_XYZ,
    Grid,
    axis_aligned_grid,
    bounding_box_index,
    grid_of,
    is_orthonormal,
    obliquity_degrees,
    physical_bounding_box,
    shrink_factors,
    spacing_with_fallback,
    valid_size,
    valid_sizes_per_axis,
)
from efficientscn.imaging.read import read_label

from helpers import shared_case

LOCALIZATION_XY = (32, 48, 64, 80)
LOCALIZATION_Z = tuple(range(32, 257, 16))


def test_index_to_physical_matches_simpleitk_on_an_oblique_grid() -> None:
    label = read_label(shared_case("ts_example_ct_sm_oblique").label)
    grid = grid_of(label)
    rng = np.random.default_rng(0)
    indices = rng.uniform(0, 40, size=(20, 3))
    expected = np.array([label.TransformContinuousIndexToPhysicalPoint(tuple(i)) for i in indices])
    assert grid.index_to_physical(indices) == pytest.approx(expected, abs=1e-9)
    assert grid.physical_to_index(expected) == pytest.approx(indices, abs=1e-9)


def test_valid_size_is_the_smallest_strictly_greater() -> None:
    assert valid_size(31, LOCALIZATION_XY) == 32
    assert valid_size(32, LOCALIZATION_XY) == 48  # an exact fit moves on (docs/fidelity.md #1)
    assert valid_size(47.5, LOCALIZATION_XY) == 48
    assert valid_size(80, LOCALIZATION_XY) == 80  # nothing greater: the largest
    assert valid_size(500, LOCALIZATION_Z) == 256
    assert valid_sizes_per_axis((10, 40, 100), (LOCALIZATION_XY, LOCALIZATION_XY, LOCALIZATION_Z)) == (32, 48, 112)
    with pytest.raises(ValueError):
        valid_sizes_per_axis((10, 40), (LOCALIZATION_XY,))


def test_shrink_factor_halves_only_axes_finer_than_half_the_target() -> None:
    assert shrink_factors((0.8, 0.8, 2.5), 6.0) == (2, 2, 2)
    assert shrink_factors((3.0, 2.99, 5.0), 6.0) == (1, 2, 1)  # 6/3 = 2 is not > 2


def test_bounding_box_index_is_inclusive_and_none_when_empty() -> None:
    mask = np.zeros((5, 6, 7), bool)
    mask[1, 2, 3] = mask[3, 4, 3] = True
    start, end = bounding_box_index(mask)
    assert start.tolist() == [1, 2, 3] and end.tolist() == [3, 4, 3]
    assert bounding_box_index(np.zeros((5, 6, 7), bool)) is None


@pytest.mark.parametrize("case_id", ["ts_example_ct_sm", "ts_example_ct_sm_lpi", "ts_example_ct_sm_asl"])
def test_physical_box_is_the_extreme_organ_voxel_centres(case_id: str) -> None:
    label = read_label(shared_case(case_id).label)
    mask = sitk.GetArrayViewFromImage(label) > 0
    index_xyz = np.argwhere(mask)[:, ::-1]
    centres = grid_of(label).index_to_physical(index_xyz)
    low, high = physical_bounding_box(mask, grid_of(label))
    assert low == pytest.approx(centres.min(axis=0), abs=1e-6)
    assert high == pytest.approx(centres.max(axis=0), abs=1e-6)


def test_physical_box_does_not_depend_on_the_orientation_of_the_grid() -> None:
    boxes = []
    for case_id in ("ts_example_ct_sm", "ts_example_ct_sm_lpi", "ts_example_ct_sm_asl"):
        label = read_label(shared_case(case_id).label)
        boxes.append(np.concatenate(physical_bounding_box(sitk.GetArrayViewFromImage(label) > 0, grid_of(label))))
    assert boxes[1] == pytest.approx(boxes[0], abs=1e-3)
    assert boxes[2] == pytest.approx(boxes[0], abs=1e-3)


def test_physical_box_encloses_every_organ_voxel_on_an_oblique_grid() -> None:
    label = read_label(shared_case("ts_example_ct_sm_oblique").label)
    mask = sitk.GetArrayViewFromImage(label) > 0
    centres = grid_of(label).index_to_physical(np.argwhere(mask)[:, ::-1])
    low, high = physical_bounding_box(mask, grid_of(label))
    assert np.all(centres >= low - 1e-6) and np.all(centres <= high + 1e-6)


def test_spacing_of_exactly_one_mm_falls_back_to_the_flare21_mean(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert spacing_with_fallback((1.0, 1.0, 1.0), "scan.nii.gz") == FLARE21_MEAN_SPACING_XYZ
    assert "scan.nii.gz" in caplog.text and "1,1,1" in caplog.text
    caplog.clear()
    assert spacing_with_fallback((1.0, 1.0, 1.25), "scan.nii.gz") == (1.0, 1.0, 1.25)
    assert not caplog.text


def test_grid_differences_name_what_differs() -> None:
    grid = Grid((10, 10, 5), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert grid.differences(grid) == []
    moved = Grid((10, 10, 5), (1.0, 1.0, 2.0), (0.0, 0.5, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    flipped = Grid((10, 10, 6), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, -1))
    assert [d.split()[0] for d in grid.differences(moved)] == ["origin"]
    assert [d.split()[0] for d in grid.differences(flipped)] == ["size", "direction"]
    finer = Grid((10, 10, 5), (1.0, 1.0, 2.01), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert [d.split()[0] for d in grid.differences(finer)] == ["spacing"]


def test_orthonormal_accepts_rotations_and_reflections_only() -> None:
    assert is_orthonormal((0, 0, 1, -1, 0, 0, 0, 1, 0))
    assert is_orthonormal((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert not is_orthonormal((1, 0, 0, 0.5, 1, 0, 0, 0, 1))
    assert not is_orthonormal((2, 0, 0, 0, 1, 0, 0, 0, 1))


def test_obliquity_is_the_largest_angle_of_an_index_axis_to_its_nearest_patient_axis() -> None:
    assert obliquity_degrees((0, 0, 1, -1, 0, 0, 0, 1, 0)) == pytest.approx(0.0)  # permuted and flipped: not oblique
    angle = np.radians(20.0)
    rotated = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, -1)
    assert obliquity_degrees(rotated) == pytest.approx(20.0)
    assert obliquity_degrees(read_label(shared_case("ts_example_ct_sm_oblique").label).GetDirection()) > 10


def test_axis_aligned_grid_covers_an_oblique_grid_with_its_spacings_along_the_nearest_axes() -> None:
    # rotated by 30 degrees about z: index x (1 mm) lies nearest to patient x, index y (2 mm) to patient y; the
    # voxel centres span 10 cos30 + 40 sin30 = 28.7 mm in x (from -20 mm), 10 sin30 + 40 cos30 = 39.6 mm in y
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    rotated = Grid((11, 21, 5), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    aligned = axis_aligned_grid(rotated)
    assert aligned.direction_matrix.tolist() == np.eye(3).tolist()
    assert aligned.spacing == (1.0, 2.0, 3.0)
    assert aligned.size == (30, 21, 5)
    assert aligned.origin == pytest.approx((-20.0, 0.0, 0.0))
    # a shared oblique CT: every voxel centre lies on the axis-aligned grid
    label = read_label(shared_case("ts_example_ct_sm_oblique").label)
    oblique = grid_of(label)
    corners = oblique.index_to_physical(np.array(list(np.ndindex(2, 2, 2))) * (np.asarray(oblique.size) - 1))
    covering = axis_aligned_grid(oblique)
    inside = covering.physical_to_index(corners)
    assert np.all(inside >= -1e-6) and np.all(inside <= np.asarray(covering.size) - 1 + 1e-6)
    straight = Grid((10, 20, 30), (1.0, 1.0, 2.0), (5.0, 6.0, 7.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert axis_aligned_grid(straight) == Grid((10, 20, 30), (1.0, 1.0, 2.0), (5.0, 6.0, 7.0), straight.direction)


def test_grid_differences_show_where_a_far_origin_differs() -> None:
    """A NIfTI header's float32 moves an origin 100 m from the scanner's centre by a millimetre; printed to six
    digits, both origins looked the same."""
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    far = Grid((122, 101, 30), (3.0, 3.0, 3.0), (123456.78, -98765.43, 4321.09), identity)
    stored = Grid(far.size, far.spacing, tuple(float(np.float32(value)) for value in far.origin), identity)
    (difference,) = far.differences(stored)
    before, after = difference.removeprefix("origin ").split(" (differ by up to ")[0].split(" != ")
    assert before != after
    assert tuple(float(v) for v in before.strip("()").split(", ")) == pytest.approx(far.origin, abs=0.01)
    assert tuple(float(v) for v in after.strip("()").split(", ")) == pytest.approx(stored.origin, abs=0.01)
    assert difference.endswith(f"(differ by up to {np.abs(np.subtract(far.origin, stored.origin)).max():.3g})")
    assert Grid((2, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), identity).differences(
        Grid((2, 2, 2), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), identity)
    ) == ["spacing (1, 1, 1) != (1, 1, 2) (differ by up to 1)"]
