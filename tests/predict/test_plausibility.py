"""Plausibility checks: inputs that are clearly not abdominal CTs in HU are refused, odd organ results warned of."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.read import read_ct
from efficientscn.phantom import PhantomGrid, make_phantom
from efficientscn.predict.plausibility import check_intensities, check_organs

from helpers import SHARED_CASES, shared_case

RNG = np.random.default_rng(0)
SHAPE = (40, 64, 64)


def test_every_shared_ct_passes_the_intensity_checks() -> None:
    for case_id in sorted(SHARED_CASES):
        ct = CanonicalCT.read(shared_case(case_id).image)  # kept: array_zyx is a view of its image
        assert check_intensities(ct.array_zyx).refusals == [], case_id


@pytest.mark.parametrize(
    ("name", "volume", "reason"),
    [
        ("water", np.zeros(SHAPE, np.int16), "air (<= -900 HU) of all voxels: 0 %"),
        ("noise", RNG.integers(-1024, 3072, SHAPE).astype(np.int16), "voxels above 500 HU of the non-air voxels"),
        ("MR-like", RNG.integers(0, 4000, SHAPE).astype(np.int16), "air (<= -900 HU) of all voxels: 0 %"),
        ("air only", np.full(SHAPE, -1024, np.int16), "soft tissue (-100 to 200 HU) of the non-air voxels: 0 %"),
    ],
)
def test_what_is_clearly_not_a_ct_in_hu_is_refused_with_the_reason(name: str, volume: np.ndarray, reason: str) -> None:
    refusals = check_intensities(volume).refusals
    assert any(reason in refusal for refusal in refusals), (name, refusals)


def test_an_inverted_ct_is_refused() -> None:
    ct = read_ct(shared_case("ts_example_ct").image)
    inverted = -sitk.GetArrayFromImage(ct)
    refusals = check_intensities(inverted).refusals
    assert any("air (<= -900 HU)" in refusal for refusal in refusals)
    assert any("voxels above 500 HU of the non-air voxels: 36 %" in refusal for refusal in refusals)  # its air


def test_the_phantoms_whole_organs_raise_no_warning() -> None:
    """Its ellipsoids have adult volumes: liver 1.76 l, two kidneys 0.29 l, spleen 0.28 l, pancreas 52 ml."""
    _, label = make_phantom(PhantomGrid(size=(128, 112, 96), spacing_mm=(3.0, 3.0, 3.0)))
    assert check_organs(sitk.GetArrayFromImage(label), (3.0, 3.0, 3.0)) == []


def test_missing_cut_off_and_scattered_organs_are_warned_of() -> None:
    _, label = make_phantom(PhantomGrid(size=(128, 112, 96), spacing_mm=(3.0, 3.0, 3.0)))
    values = sitk.GetArrayFromImage(label)
    values[values == 3] = 0  # no spleen
    values[: values.shape[0] * 3 // 4][values[: values.shape[0] * 3 // 4] == 1] = 0  # the liver mostly cut off
    for corner in range(0, 90, 10):  # nine islands of pancreas, far from it: a pancreas in pieces
        values[corner : corner + 5, 0:5, 0:5] = 4
    warnings = check_organs(values, (3.0, 3.0, 3.0))
    assert "spleen: none found (not in the scan?)" in warnings
    assert any(w.startswith("liver: ") and "less than a whole one (500 ml" in w for w in warnings)
    assert not any(w.startswith("kidney") for w in warnings)
    assert any(w.startswith("pancreas: scattered; its largest 2 pieces hold only") for w in warnings), warnings
