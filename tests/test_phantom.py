"""The synthetic phantom: known organs at known places on any grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.geometry import grid_of, physical_bounding_box
from efficientscn.labels import ORGAN_NAMES
from efficientscn.phantom import ORGANS, PhantomGrid, make_phantom

OBLIQUE = tuple(sitk.Euler3DTransform((0, 0, 0), 0.2, -0.1, 0.35).GetMatrix())


def _organ_volumes_ml(label: sitk.Image) -> np.ndarray:
    counts = np.bincount(sitk.GetArrayViewFromImage(label).ravel(), minlength=5)[1:]
    return counts * np.prod(label.GetSpacing()) / 1000.0


def test_phantom_has_every_organ_with_its_hu() -> None:
    ct, label = make_phantom(noise_hu=0)
    assert ct.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    ct_values, labels = sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(label)
    for organ in ORGANS:
        assert np.median(ct_values[labels == organ.label]) == organ.hu
    assert set(np.unique(labels)) == {0, *ORGAN_NAMES}


def test_same_anatomy_on_different_grids() -> None:
    _, reference = make_phantom(PhantomGrid(size=(160, 128, 96), spacing_mm=(2.5, 2.5, 3.0)), noise_hu=0)
    _, oblique = make_phantom(
        PhantomGrid(size=(120, 120, 90), spacing_mm=(3.0, 3.0, 3.0), direction=OBLIQUE, centre_mm=(5.0, -5.0, 10.0)),
        noise_hu=0,
    )
    assert _organ_volumes_ml(oblique) == pytest.approx(_organ_volumes_ml(reference), rel=0.1)
    liver_ref, liver_obl = (_liver_voxel_centres(label) for label in (reference, oblique))
    assert liver_obl.min(axis=0) == pytest.approx(liver_ref.min(axis=0), abs=4.0)
    assert liver_obl.max(axis=0) == pytest.approx(liver_ref.max(axis=0), abs=4.0)


def _liver_voxel_centres(label: sitk.Image) -> np.ndarray:
    return grid_of(label).index_to_physical(np.argwhere(sitk.GetArrayViewFromImage(label) == 1)[:, ::-1])


def test_shift_moves_the_organs_by_that_many_mm() -> None:
    grid = PhantomGrid(size=(100, 80, 60), spacing_mm=(4.0, 4.0, 5.0))
    _, still = make_phantom(grid, noise_hu=0)
    _, moved = make_phantom(grid, shift_mm=(12.0, 0.0, -10.0), noise_hu=0)
    low_still, _ = physical_bounding_box(sitk.GetArrayViewFromImage(still) == 1, grid_of(still))
    low_moved, _ = physical_bounding_box(sitk.GetArrayViewFromImage(moved) == 1, grid_of(moved))
    assert low_moved - low_still == pytest.approx([12.0, 0.0, -10.0], abs=5.0)
