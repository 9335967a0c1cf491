"""What counts as a faithful import of one of the original's networks: the comparisons of its outputs with the
original graph's on the same input, and their thresholds (NumPy only, so the command line states them without
loading TensorFlow)."""

from __future__ import annotations

from typing import Any

import numpy as np

LOCALIZATION_MIN_DICE = 0.999
"""Imported and original localization masks must overlap at least this much (Dice) on the probe."""
SEGMENTATION_MAX_DIFFERENCE = 0.05
"""The largest difference allowed between imported and original probabilities of any label at any voxel (bfloat16
against the original's float16 was measured at 0.018 on the shared CTs, float32 at 0.003)."""
SEGMENTATION_MIN_AGREEMENT = 0.999
"""The fraction of voxels whose most probable label must be the same (bfloat16: 0.9991-0.9997 on the shared CTs)."""


def compare_masks(original: np.ndarray, imported: np.ndarray) -> dict[str, Any]:
    """The localization check: Dice of the two masks against LOCALIZATION_MIN_DICE; inconclusive if both are empty
    (an empty probe proves nothing)."""
    original, imported = original.astype(bool), imported.astype(bool)
    figures: dict[str, Any] = {
        "foreground_voxels": int(original.sum()),
        "differing_voxels": int(np.count_nonzero(original != imported)),
        "min_dice": LOCALIZATION_MIN_DICE,
    }
    if not original.any():  # nothing to compare, unless the import marks organs where the original sees none
        return {"verdict": "failed" if imported.any() else "inconclusive", **figures}
    dice = 2 * np.count_nonzero(original & imported) / (original.sum() + imported.sum())
    return {
        "verdict": "verified" if dice >= LOCALIZATION_MIN_DICE else "failed",
        "dice": round(float(dice), 6),
        **figures,
    }


def compare_probabilities(original: np.ndarray, imported: np.ndarray) -> dict[str, Any]:
    """The segmentation check: [N, 5, D, H, W] probabilities, largest difference and argmax agreement."""
    original, imported = original.astype(np.float32), imported.astype(np.float32)
    difference = float(np.max(np.abs(original - imported)))
    agreement = float(np.mean(np.argmax(original, axis=1) == np.argmax(imported, axis=1)))
    passed = difference <= SEGMENTATION_MAX_DIFFERENCE and agreement >= SEGMENTATION_MIN_AGREEMENT
    return {
        "verdict": "verified" if passed else "failed",
        "max_probability_difference": round(difference, 6),
        "argmax_agreement": round(agreement, 6),
        "max_allowed_difference": SEGMENTATION_MAX_DIFFERENCE,
        "min_agreement": SEGMENTATION_MIN_AGREEMENT,
    }
