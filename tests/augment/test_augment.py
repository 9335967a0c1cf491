"""Spatial and intensity augmentation: centring, image/label alignment on a real CT, dense field, intensities."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.augment import (
    IntensityAugmentConfig,
    SpatialAugmentConfig,
    augment_intensity,
    field_grid,
    image_center,
    normalize_intensity,
    output_center,
    random_gamma,
    resample,
    sample_transform,
    to_displacement_field,
)
from efficientscn.imaging.canonical import to_canonical
from efficientscn.imaging.geometry import Grid, grid_of
from efficientscn.imaging.read import read_ct, read_label

from helpers import REPO_ROOT, shared_case

MEDIAN_HU = {1: 46.0, 2: 14.0, 3: 35.0}


NO_AUGMENTATION = SpatialAugmentConfig(
    translation_mm=0, rotation_rad=0, uniform_scale=0, axis_scale=0, deformation_mm=0
)


@pytest.fixture(scope="module")
def small_canonical() -> tuple[sitk.Image, sitk.Image]:
    """ts_example_ct_sm (122x101x30 at 3 mm) in LPS orientation, so its direction is the identity."""
    case = shared_case("ts_example_ct_sm")
    return to_canonical(read_ct(case.image))[0], to_canonical(read_label(case.label))[0]


def _affine_matrix(transform: sitk.CompositeTransform) -> np.ndarray:
    return np.asarray(sitk.AffineTransform(transform.GetNthTransform(0)).GetMatrix()).reshape(3, 3)


def _patch(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1500, 3000, (12, 10, 8)).astype(np.float32)


@pytest.mark.parametrize("dense", [False, True])
def test_centring_on_own_grid_reproduces_input(small_canonical, dense: bool) -> None:
    image, label = small_canonical
    size, spacing = image.GetSize(), image.GetSpacing()
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    for config, rng in ((None, None), (NO_AUGMENTATION, np.random.default_rng(3))):
        transform = sample_transform(image, size, spacing, config, rng)
        labels = resample(label, transform, size, spacing, "nearest", 0, dense_field=dense)
        values = resample(image, transform, size, spacing, "linear", -1024, dense_field=dense)
        np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(label))
        assert labels.dtype == np.uint8 and values.dtype == np.float32
        np.testing.assert_allclose(values, sitk.GetArrayFromImage(image), atol=1e-2)


def test_centre_maps_to_centre(ct_pair) -> None:
    image, _ = ct_pair
    size, spacing = (80, 64, 96), (6.0, 6.0, 6.0)
    centre_out = output_center(size, spacing)
    assert centre_out == pytest.approx([237.0, 189.0, 285.0])
    plain = sample_transform(image, size, spacing)
    assert plain.TransformPoint(centre_out.tolist()) == pytest.approx(image_center(grid_of(image)), abs=1e-9)
    box_centre = (12.5, -30.0, 140.0)
    zoomed = sample_transform(image, size, spacing, center_xyz=box_centre, fixed_scale=1.5)
    assert zoomed.TransformPoint(centre_out.tolist()) == pytest.approx(box_centre, abs=1e-9)
    one_step = np.asarray(zoomed.TransformPoint((centre_out + np.array([6.0, 0, 0])).tolist())) - box_centre
    assert one_step == pytest.approx([9.0, 0.0, 0.0], abs=1e-9)  # zoomed out: 6 mm of output cover 9 mm of input
    # random affine without deformation keeps the centres paired up to the random translation (±20 mm per axis)
    moved = sample_transform(image, size, spacing, SpatialAugmentConfig(deformation_mm=0), np.random.default_rng(1))
    offset = np.asarray(moved.TransformPoint(centre_out.tolist())) - image_center(grid_of(image))
    assert 0 < np.abs(offset).max() <= 20.0


def test_outside_value_and_label_range(ct_pair) -> None:
    image, label = ct_pair
    size, spacing = (48, 48, 48), (12.0, 12.0, 12.0)  # 576 mm: far beyond the 366x303x336 mm CT
    transform = sample_transform(image, size, spacing, SpatialAugmentConfig(), np.random.default_rng(7))
    values = resample(image, transform, size, spacing, "linear", -1024)
    labels = resample(label, transform, size, spacing, "nearest", 0)
    assert values.shape == labels.shape == (48, 48, 48)
    corners = values[np.ix_([0, -1], [0, -1], [0, -1])]  # >= 350 mm from the centre even at the smallest scale
    assert np.all(corners == -1024) and np.mean(values == -1024) > 0.5
    assert values.min() >= -1024 and values.max() > 200  # real tissue and bone inside
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3, 4}


def test_augmentation_keeps_image_and_label_aligned(ct_pair) -> None:
    image, label = ct_pair
    original = sitk.GetArrayFromImage(label)
    original_ml = {k: np.count_nonzero(original == k) * 27.0 / 1000 for k in MEDIAN_HU}
    size, spacing = (96, 96, 96), (4.0, 4.0, 4.0)
    config = SpatialAugmentConfig()
    for seed in range(3):
        transform = sample_transform(image, size, spacing, config, np.random.default_rng(seed))
        field = to_displacement_field(transform, size, spacing, config.field_sampling)
        values = resample(image, field, size, spacing, "linear", -1024, dense_field=False)
        labels = resample(label, field, size, spacing, "nearest", 0, dense_field=False)
        determinant = np.linalg.det(_affine_matrix(transform))
        assert 0.8**3 * 0.9**3 <= determinant <= 1.2**3 * 1.1**3
        for organ, median in MEDIAN_HU.items():
            inside = labels == organ
            assert abs(np.median(values[inside]) - median) < 4.0, (seed, organ)
            # output mm^3 = input mm^3 / det(scale); the B-spline and cropping may change it a little more
            ratio = np.count_nonzero(inside) * 64.0 / 1000 / (original_ml[organ] / determinant)
            assert 0.7 < ratio < 1.4, (seed, organ, ratio)
    # control: a label drawn with another transform does not line up, and the check above would see it
    other = resample(
        label, sample_transform(image, size, spacing, config, np.random.default_rng(101)), size, spacing, "nearest", 0
    )
    assert max(abs(np.median(values[other == k]) - m) for k, m in MEDIAN_HU.items()) > 10.0


def test_random_transforms_cover_the_papers_ranges_over_many_draws() -> None:
    """Translation U[±20 mm], rotations U[±0.35 rad] about x, then y, then z, uniform scale 1 ± 0.2 times per-axis
    1 ± 0.1, B-spline coefficients U[±15 mm] on 8 nodes per axis (spline order 2), read back from 400 transforms."""
    from scipy.spatial.transform import Rotation

    grid = Grid((64, 64, 64), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    size, spacing = (32, 32, 32), (6.0, 6.0, 6.0)
    centre_in, centre_out = image_center(grid), output_center(size, spacing)
    rng = np.random.default_rng(0)
    translations, angles, scales, coefficients = [], [], [], []
    for _ in range(400):
        transform = sample_transform(grid, size, spacing, SpatialAugmentConfig(), rng)
        affine = sitk.AffineTransform(transform.GetNthTransform(0))
        matrix = np.asarray(affine.GetMatrix()).reshape(3, 3)
        translations.append(np.asarray(affine.TransformPoint(centre_out.tolist())) - centre_in)
        scale = np.linalg.norm(matrix, axis=0)  # matrix = rotation @ diag(scale)
        scales.append(scale)
        # extrinsic x, y, z: the rotation about x acts first; another order shows as angles beyond the range
        angles.append(Rotation.from_matrix(matrix / scale).as_euler("xyz"))
        bspline = sitk.BSplineTransform(transform.GetNthTransform(1))
        assert bspline.GetOrder() == 2 and bspline.GetTransformDomainMeshSize() == (6, 6, 6)  # 6 + 2 = 8 nodes
        coefficients.append(np.asarray(bspline.GetParameters()))
    translations, angles, scales = np.array(translations), np.array(angles), np.array(scales)
    coefficients = np.concatenate(coefficients)
    for values, limit in ((translations, 20.0), (angles, 0.35), (coefficients, 15.0)):
        assert np.abs(values).max() <= limit + 1e-9
        assert np.abs(values).max() > 0.99 * limit
        assert values.std() == pytest.approx(limit / np.sqrt(3), rel=0.08)  # the standard deviation of U[±limit]
        assert abs(values.mean()) < 0.1 * limit
    assert coefficients.size == 400 * 3 * 8**3
    assert scales.min() >= 0.8 * 0.9 - 1e-9 and scales.max() <= 1.2 * 1.1 + 1e-9
    assert scales.min() < 0.75 and scales.max() > 1.28
    # one uniform factor shared by the axes: var(U[±0.2]) / (var(U[±0.2]) + var(U[±0.1])) = 0.8 of the variance
    correlation = np.corrcoef(scales.T)[np.triu_indices(3, 1)]
    assert np.all((correlation > 0.7) & (correlation < 0.9))


def test_bspline_spans_the_output_from_the_first_voxel_centre_to_the_last_field_node() -> None:
    # A deviation (docs/fidelity.md #26): the original's B-spline domain is output size x spacing from origin 0;
    # ours ends at the last node of the coarse field grid (2 voxels apart), so the dense field never samples it
    # outside: 31 voxels of 6 mm -> 16 nodes, 180 mm (the original: 186); 32 and 33 voxels -> 17 nodes, 192 mm.
    grid = Grid((64, 64, 64), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    transform = sample_transform(grid, (31, 32, 33), (6.0, 6.0, 6.0), SpatialAugmentConfig(), np.random.default_rng(0))
    bspline = sitk.BSplineTransform(transform.GetNthTransform(1))
    assert bspline.GetTransformDomainOrigin() == (0.0, 0.0, 0.0)
    assert bspline.GetTransformDomainPhysicalDimensions() == pytest.approx((180.0, 192.0, 192.0))


def test_dense_field_agrees_with_direct_resampling(ct_pair) -> None:
    image, label = ct_pair
    size, spacing = (64, 56, 64), (6.0, 6.0, 6.0)
    transform = sample_transform(image, size, spacing, SpatialAugmentConfig(), np.random.default_rng(11))
    assert transform.GetNumberOfTransforms() == 2  # affine and B-spline
    labels = {d: resample(label, transform, size, spacing, "nearest", 0, dense_field=d) for d in (False, True)}
    values = {d: resample(image, transform, size, spacing, "linear", -1024, dense_field=d) for d in (False, True)}
    assert np.mean(labels[True] == labels[False]) > 0.99
    assert np.mean(np.abs(values[True] - values[False])) < 5.0  # HU
    assert not np.array_equal(values[True], values[False])  # really two different code paths


def test_field_grid_covers_the_last_voxel() -> None:
    assert field_grid((80, 80, 256), (6.0, 6.0, 6.0), 2) == ((41, 41, 129), (12.0, 12.0, 12.0))
    size, spacing = field_grid((81, 7, 2), (2.0, 2.0, 2.0), 2)
    assert size == (41, 4, 2)
    assert all((n - 1) * s >= (m - 1) * 2.0 for n, s, m in zip(size, spacing, (81, 7, 2), strict=True))


def test_same_seed_same_sample(ct_pair) -> None:
    image, _ = ct_pair
    size, spacing = (32, 32, 32), (8.0, 8.0, 8.0)
    draws = [
        sample_transform(image, size, spacing, SpatialAugmentConfig(), np.random.default_rng(s)) for s in (5, 5, 6)
    ]
    points = [np.asarray(t.TransformPoint((40.0, 100.0, 200.0))) for t in draws]
    np.testing.assert_array_equal(points[0], points[1])
    assert not np.allclose(points[0], points[2])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="scale"):
        SpatialAugmentConfig(uniform_scale=1.2)
    with pytest.raises(ValueError, match="grid_nodes"):
        SpatialAugmentConfig(deformation_grid_nodes=2)
    with pytest.raises(ValueError, match="gamma_range"):
        IntensityAugmentConfig(gamma_range=(0.0, 1.2))


def test_augment_imports_no_tensorflow() -> None:
    code = "import sys, efficientscn.augment; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_validation_intensities_are_scaled_and_clamped() -> None:
    patch = _patch()
    expected = np.clip(patch / 2048, -1, 1)
    np.testing.assert_allclose(normalize_intensity(patch), expected, rtol=1e-6)
    np.testing.assert_allclose(augment_intensity(patch, IntensityAugmentConfig(), None), expected, rtol=1e-6)
    assert normalize_intensity(patch.astype(np.int16)).dtype == np.float32


def test_random_intensities_stay_in_range_and_repeat_with_the_seed() -> None:
    patch, config = _patch(), IntensityAugmentConfig()
    first = augment_intensity(patch, config, np.random.default_rng(4))
    assert first.dtype == np.float32 and first.min() >= -1 and first.max() <= 1
    np.testing.assert_array_equal(first, augment_intensity(patch, config, np.random.default_rng(4)))
    assert not np.allclose(first, augment_intensity(patch, config, np.random.default_rng(5)))
    assert not np.allclose(first, normalize_intensity(patch))


def test_random_shift_and_scale_bounds() -> None:
    patch = np.linspace(-500, 500, 1000, dtype=np.float32)  # inside [-1, 1] after /2048: no clamping
    config = IntensityAugmentConfig(gamma_range=None)
    for seed in range(20):
        out = augment_intensity(patch, config, np.random.default_rng(seed))
        factor = (out[-1] - out[0]) / (patch[-1] - patch[0]) * 2048
        shift = out[len(out) // 2] / factor - patch[len(out) // 2] / 2048
        assert 0.8 - 1e-5 <= factor <= 1.2 + 1e-5
        assert abs(shift) <= 0.2 + 1e-3


def test_gamma_keeps_min_and_max_and_is_monotone() -> None:
    patch = _patch()
    for gamma in (0.8, 1.2):
        out = random_gamma(patch, gamma)
        assert out.min() == pytest.approx(patch.min(), abs=1e-3)
        assert out.max() == pytest.approx(patch.max(), abs=1e-3)
        order = np.argsort(patch, axis=None)
        assert np.all(np.diff(out.ravel()[order]) >= 0)
    assert np.mean(random_gamma(patch, 1.2)) < np.mean(patch) < np.mean(random_gamma(patch, 0.8))


def test_constant_patch_gives_no_nan() -> None:
    patch = np.full((4, 5, 6), 300.0, np.float32)
    np.testing.assert_array_equal(random_gamma(patch, 1.1), patch)
    out = augment_intensity(patch, IntensityAugmentConfig(), np.random.default_rng(0))
    assert np.all(np.isfinite(out)) and np.unique(out).size == 1
