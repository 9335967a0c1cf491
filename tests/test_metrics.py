"""FLARE21 Dice and NSD: analytic cases, the challenge's empty-mask rules, parity with `surface-distance`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import surface_distance

from efficientscn.evaluate import evaluate_case
from efficientscn.labels import ORGAN_NAMES
from efficientscn.metrics import dice_coefficient, normalized_surface_dice, organ_score

from helpers import shared_case


def _box(shape=(40, 40, 40), start=(10, 10, 10), size=(20, 20, 20)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = True
    return mask


def test_identical_masks_score_one() -> None:
    score = organ_score(_box(), _box(), (1.0, 1.0, 1.0))
    assert score.dice == 1.0 and score.nsd == 1.0


def test_shift_within_tolerance_keeps_nsd_at_one() -> None:
    shifted = _box(start=(10, 10, 11))  # 1 voxel = 1 mm along x
    score = organ_score(shifted, _box(), (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert score.dice == pytest.approx(19 / 20)
    assert score.nsd == pytest.approx(1.0)


def test_concentric_boxes_two_mm_apart_have_no_surface_within_one_mm() -> None:
    inner, outer = _box(start=(12, 12, 12), size=(16, 16, 16)), _box()
    score = organ_score(inner, outer, (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert score.dice == pytest.approx(2 * 16**3 / (16**3 + 20**3))
    assert score.nsd == 0.0
    # faces are 2 mm apart but edges 2.83 mm and corners 3.46 mm: only a tolerance beyond that catches all
    assert 0.5 < normalized_surface_dice(inner, outer, (1.0, 1.0, 1.0), tolerance_mm=2.0) < 1.0
    assert normalized_surface_dice(inner, outer, (1.0, 1.0, 1.0), tolerance_mm=3.5) == pytest.approx(1.0)


def test_spacing_is_taken_in_array_axis_order() -> None:
    spacing_zyx = (3.0, 1.0, 1.0)
    along_x = _box(start=(10, 10, 11))
    along_z = _box(start=(11, 10, 10))
    assert normalized_surface_dice(along_x, _box(), spacing_zyx) == pytest.approx(1.0)  # 1 mm apart
    assert normalized_surface_dice(along_z, _box(), spacing_zyx) < 0.9  # 3 mm apart on two faces


def test_empty_mask_rules_of_the_challenge() -> None:
    empty = np.zeros((20, 20, 20), bool)
    some = _box((20, 20, 20), (5, 5, 5), (5, 5, 5))
    both_empty = organ_score(empty, empty, (1, 1, 1))
    predicted_not_in_reference = organ_score(some, empty, (1, 1, 1))
    missed = organ_score(empty, some, (1, 1, 1))
    assert (both_empty.dice, both_empty.nsd) == (1.0, 1.0)
    assert (predicted_not_in_reference.dice, predicted_not_in_reference.nsd) == (0.0, 0.0)
    assert (missed.dice, missed.nsd) == (0.0, 0.0)
    assert dice_coefficient(empty, empty) == 1.0


def test_disjoint_masks_score_zero() -> None:
    score = organ_score(_box(start=(0, 0, 0), size=(5, 5, 5)), _box(start=(30, 30, 30), size=(5, 5, 5)), (1, 1, 1))
    assert score.dice == 0.0 and score.nsd == 0.0


def test_real_label_scores_from_files_equal_the_surface_distance_package(tmp_path: Path) -> None:
    """A real thick-slice label against a shifted, ragged copy, scored from files with the 7.5 mm slices.

    At a 5 mm tolerance the one-slice shift (7.5 mm) is outside and would be inside (3 mm) if the spacing were taken
    in xyz instead of zyx order, so the test notices an axis-order mix-up anywhere between file and metric.
    """
    reference_path = shared_case("ts_example_ct_sm_aniso").label
    label = sitk.ReadImage(str(reference_path))
    reference = sitk.GetArrayFromImage(label)
    prediction = np.roll(reference, shift=1, axis=0)  # one 7.5 mm slice
    prediction = np.where(np.roll(reference, 2, axis=2) == reference, prediction, 0)  # and ragged 3 mm edges
    predicted = sitk.GetImageFromArray(prediction)
    predicted.CopyInformation(label)
    prediction_path = tmp_path / "prediction.nii.gz"
    sitk.WriteImage(predicted, str(prediction_path))

    ours = evaluate_case(prediction_path, reference_path, tolerance_mm=5.0)

    spacing_zyx = (7.5, 3.0, 3.0)
    for value, name in ORGAN_NAMES.items():
        gt, pred = reference == value, prediction == value
        expected = surface_distance.compute_surface_dice_at_tolerance(
            surface_distance.compute_surface_distances(gt, pred, spacing_zyx), 5.0
        )
        axes_swapped = surface_distance.compute_surface_dice_at_tolerance(
            surface_distance.compute_surface_distances(gt, pred, spacing_zyx[::-1]), 5.0
        )
        assert ours[name].nsd == pytest.approx(expected)
        assert abs(expected - axes_swapped) > 0.02
        assert ours[name].dice == pytest.approx(surface_distance.compute_dice_coefficient(gt, pred))
        assert 0.0 < ours[name].nsd < 1.0 and 0.0 < ours[name].dice < 1.0
