"""FLARE21 metrics on label arrays: Dice and normalised surface Dice (NSD) per organ, with the challenge's rules.

The challenge scored labels 1..4 with DSC and NSD at 1 mm tolerance, using DeepMind's `surface-distance`
package for the surfaces; an organ absent from both the reference and the prediction scores 1, an organ
predicted but absent from the reference scores 0. The same package and rules are used here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import surface_distance

from efficientscn.labels import ORGAN_NAMES

FLARE21_NSD_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class OrganScore:
    """Dice and normalised surface Dice of one organ, both in [0, 1], and whether the organ was in each map (an
    organ the reference lacks is scored by the challenge's rule, not measured)."""

    dice: float
    nsd: float
    in_reference: bool = True
    in_prediction: bool = True


def dice_coefficient(prediction: np.ndarray, reference: np.ndarray) -> float:
    """2|P∩R| / (|P| + |R|) of two boolean masks; 1 when both are empty."""
    total = int(np.count_nonzero(prediction)) + int(np.count_nonzero(reference))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(prediction & reference)) / total


def normalized_surface_dice(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing_zyx: Sequence[float],
    tolerance_mm: float = FLARE21_NSD_TOLERANCE_MM,
) -> float:
    """Fraction of both surfaces (by area) within `tolerance_mm` of the other surface; masks zyx, spacing zyx mm.

    Empty masks follow the challenge: 1 when both are empty, 0 when exactly one is.
    """
    has_prediction, has_reference = bool(prediction.any()), bool(reference.any())
    if not (has_prediction or has_reference):
        return 1.0
    if not (has_prediction and has_reference):
        return 0.0
    with warnings.catch_warnings():
        # the package still calls scipy.ndimage.filters/morphology, deprecated until SciPy 2 (pinned below it)
        warnings.simplefilter("ignore", DeprecationWarning)
        distances = surface_distance.compute_surface_distances(
            reference.astype(bool, copy=False),
            prediction.astype(bool, copy=False),
            tuple(float(s) for s in spacing_zyx),
        )
    return float(surface_distance.compute_surface_dice_at_tolerance(distances, tolerance_mm))


def organ_score(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing_zyx: Sequence[float],
    tolerance_mm: float = FLARE21_NSD_TOLERANCE_MM,
) -> OrganScore:
    """Dice and NSD of one organ's boolean masks with the FLARE21 empty-mask rules (see module docstring)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} != reference shape {reference.shape}")
    predicted = bool(prediction.any())
    if not reference.any():
        score = 0.0 if predicted else 1.0
        return OrganScore(dice=score, nsd=score, in_reference=False, in_prediction=predicted)
    return OrganScore(
        dice=dice_coefficient(prediction, reference),
        nsd=normalized_surface_dice(prediction, reference, spacing_zyx, tolerance_mm),
        in_prediction=predicted,
    )


def flare_scores(
    prediction_zyx: np.ndarray,
    reference_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    tolerance_mm: float = FLARE21_NSD_TOLERANCE_MM,
) -> dict[str, OrganScore]:
    """Per-organ scores (liver, kidney, spleen, pancreas) of two label maps on the same grid, zyx, spacing zyx mm."""
    if prediction_zyx.shape != reference_zyx.shape:
        raise ValueError(f"prediction shape {prediction_zyx.shape} != reference shape {reference_zyx.shape}")
    return {
        name: organ_score(prediction_zyx == label, reference_zyx == label, spacing_zyx, tolerance_mm)
        for label, name in ORGAN_NAMES.items()
    }
