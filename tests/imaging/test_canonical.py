"""The canonical (LPS) view of a CT and its exact way back, on every shared case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.canonical import canonical_reorientation, to_canonical
from efficientscn.imaging.geometry import grid_of, physical_bounding_box
from efficientscn.imaging.read import read_ct, read_label
from efficientscn.imaging.write import write_label

from helpers import SharedCase


def test_label_through_canonical_space_is_written_back_on_the_input_grid(
    any_shared_case: SharedCase, tmp_path: Path
) -> None:
    original = read_label(any_shared_case.label)
    canonical, reorientation = to_canonical(original)
    written = write_label(reorientation.to_original_image(sitk.GetArrayFromImage(canonical)), tmp_path / "x.nii.gz")
    reread = sitk.ReadImage(str(written))
    assert reread.GetPixelID() == sitk.sitkUInt8
    assert reread.GetSize() == original.GetSize()
    assert reread.GetSpacing() == pytest.approx(original.GetSpacing(), abs=1e-6)
    assert reread.GetOrigin() == pytest.approx(original.GetOrigin(), abs=1e-4)
    assert reread.GetDirection() == pytest.approx(original.GetDirection(), abs=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(reread), sitk.GetArrayFromImage(original))


def test_canonical_image_keeps_every_voxel_at_its_physical_place(any_shared_case: SharedCase) -> None:
    ct, label = read_ct(any_shared_case.image), read_label(any_shared_case.label)
    canonical_ct, reorientation = to_canonical(ct)
    canonical_label, _ = to_canonical(label)
    # The organs occupy the same physical box before and after reorientation ...
    original_box = physical_bounding_box(sitk.GetArrayViewFromImage(label) > 0, grid_of(label))
    canonical_box = physical_bounding_box(sitk.GetArrayViewFromImage(canonical_label) > 0, grid_of(canonical_label))
    assert canonical_box[0] == pytest.approx(original_box[0], abs=1e-3)
    assert canonical_box[1] == pytest.approx(original_box[1], abs=1e-3)
    # ... CT and label stay aligned (same HU inside the liver) ...
    liver_hu = np.median(sitk.GetArrayViewFromImage(ct)[sitk.GetArrayViewFromImage(label) == 1])
    canonical_liver_hu = np.median(
        sitk.GetArrayViewFromImage(canonical_ct)[sitk.GetArrayViewFromImage(canonical_label) == 1]
    )
    assert canonical_liver_hu == liver_hu
    # ... and the NumPy view of the reorientation is exactly what SimpleITK's filter produced.
    assert np.array_equal(
        reorientation.to_canonical_array(sitk.GetArrayViewFromImage(ct)), sitk.GetArrayViewFromImage(canonical_ct)
    )
    # The reorientation found from the direction alone is the same, and so is the canonical spacing.
    assert canonical_reorientation(ct) == reorientation
    assert reorientation.canonical_spacing_xyz == pytest.approx(canonical_ct.GetSpacing(), abs=1e-9)


def test_canonical_axes_point_left_posterior_superior(any_shared_case: SharedCase) -> None:
    canonical, _ = to_canonical(read_ct(any_shared_case.image))
    direction = np.asarray(canonical.GetDirection()).reshape(3, 3)
    assert np.all(np.diag(direction) > 0.9), direction  # index axis i runs along +x, +y, +z (L, P, S)
    if "oblique" not in any_shared_case.id:
        assert direction == pytest.approx(np.eye(3))
