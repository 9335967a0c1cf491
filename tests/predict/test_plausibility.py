"""Plausibility checks: inputs that are clearly not abdominal CTs in HU are refused, odd organ results warned of."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.read import read_ct
from efficientscn.phantom import PhantomGrid, make_phantom
from efficientscn.predict.plausibility import check_intensities, check_organs, gate_input, gate_organs

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
    # its upper quarter is left, away from the scan's ends: not cut off by the scan
    missed = "smaller than a whole one (500 ml): missed in part?"
    assert any(w.startswith("liver: ") and w.endswith(missed) for w in warnings), warnings
    assert not any(w.startswith("kidney") for w in warnings)
    assert any(w.startswith("pancreas: scattered; its largest 2 pieces hold only") for w in warnings), warnings


@pytest.mark.parametrize("case_id", ["ts_example_ct", "ts_example_ct_dicom", "ts_example_ct_sm_asl"])
def test_a_ct_with_air_and_soft_tissue_swapped_is_refused(case_id: str) -> None:
    """-1000 - HU: the body becomes air inside soft tissue (the air around it), which the shares of air, soft tissue
    and dense voxels all let pass; the edges of its slices are not air."""
    ct = CanonicalCT.read(shared_case(case_id).image)  # kept: array_zyx is a view of its image
    inverted = np.clip(-1000 - ct.array_zyx.astype(np.int32), -32768, 32767).astype(np.int16)
    findings = check_intensities(inverted)
    assert [refusal for refusal in findings.refusals if "edges of the axial slices" in refusal], findings
    source = shared_case(case_id).image
    with pytest.raises(InputError, match="edges of the axial slices") as refused:
        gate_input(inverted, source)
    assert str(refused.value).startswith(f"{source}: not like a CT in Hounsfield units")
    assert any("edges of the axial slices" in warning for warning in gate_input(inverted, source, force=True))


def test_an_organ_smaller_than_a_whole_one_is_said_cut_off_only_where_it_fills_an_end_slice() -> None:
    """The phantom's liver without its lower three quarters: cut off where the scan ends there, missed in part where
    the scan goes on below it."""
    _, label = make_phantom(PhantomGrid(size=(128, 112, 96), spacing_mm=(3.0, 3.0, 3.0)))
    values = sitk.GetArrayFromImage(label)
    liver_slices = np.flatnonzero((values == 1).any(axis=(1, 2)))
    top = int(np.percentile(liver_slices, 75))
    values[:top][values[:top] == 1] = 0  # z runs from the feet: the lower three quarters gone
    scan_from_the_cut = values[top:]  # the scan begins where the liver is cut
    (cut,) = [w for w in check_organs(scan_from_the_cut, (3.0, 3.0, 3.0)) if w.startswith("liver: ")]
    assert cut.endswith("ml, less than a whole one (500 ml): cut off by the scan? (it fills the scan's lowest slice)")
    (missed,) = [w for w in check_organs(values, (3.0, 3.0, 3.0)) if w.startswith("liver: ")]
    assert missed.endswith("ml, smaller than a whole one (500 ml): missed in part?")


def test_a_segmentation_without_any_organ_fails_its_case_naming_the_ct(tmp_path) -> None:
    source = tmp_path / "pelvis.nii.gz"
    with pytest.raises(InputError, match="no organs found in the segmentation") as refused:
        gate_organs(np.zeros(SHAPE, np.uint8), (3.0, 3.0, 3.0), source)
    assert str(refused.value).startswith(f"{source}: ")
    label = np.zeros(SHAPE, np.uint8)
    label[10:14, 20:26, 20:26] = 3  # a small spleen: warned of, not refused
    assert any(w.startswith("spleen: ") for w in gate_organs(label, (3.0, 3.0, 3.0), source))
