"""The checks of an import against the original's graph, and where converted models are kept, on made-up outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from efficientscn.infer.models import run_precision
from efficientscn.infer.original import (
    LOCALIZATION_MIN_DICE,
    SEGMENTATION_MAX_DIFFERENCE,
    cache_root,
    compare_masks,
    compare_probabilities,
)
from efficientscn.model.savedmodel import UNSUITABLE_PRECISIONS


def _mask(voxels: int) -> np.ndarray:
    mask = np.zeros((1, 1, 10, 10, 100), bool)
    mask.reshape(-1)[:voxels] = True
    return mask


def test_masks_pass_at_the_dice_threshold_and_fail_below_it() -> None:
    original = _mask(5000)
    one_off = _mask(4995)  # Dice 2 * 4995 / 9995 = 0.9995
    result = compare_masks(original, one_off)
    assert result["verdict"] == "verified" and result["differing_voxels"] == 5 and result["dice"] >= 0.999
    assert result["min_dice"] == LOCALIZATION_MIN_DICE
    twenty_off = _mask(4980)  # Dice 0.998
    assert compare_masks(original, twenty_off)["verdict"] == "failed"


def test_an_empty_original_mask_is_inconclusive_whatever_the_import_says() -> None:
    for imported in (_mask(0), _mask(30)):
        result = compare_masks(_mask(0), imported)
        assert result["verdict"] == "inconclusive" and "dice" not in result


def test_probabilities_fail_on_a_large_difference_or_on_argmax_disagreement() -> None:
    rng = np.random.default_rng(0)
    original = rng.dirichlet(np.full(5, 0.2), (1, 10, 10, 100)).transpose(0, 4, 1, 2, 3).astype(np.float16)
    close = original + np.float16(0.01)
    result = compare_probabilities(original, close)
    assert result["verdict"] == "verified" and result["argmax_agreement"] == 1.0
    assert result["max_probability_difference"] == pytest.approx(0.01, abs=1e-3)
    spike = original.copy()
    spike[0, 0, 0, 0, 0] += np.float16(2 * SEGMENTATION_MAX_DIFFERENCE)  # one voxel far off
    assert compare_probabilities(original, spike)["verdict"] == "failed"
    swapped = original.copy()
    swapped[:, [1, 2]] = swapped[:, [2, 1]]  # two labels exchanged: the difference is large and argmax moves
    result = compare_probabilities(original, swapped)
    assert result["verdict"] == "failed" and result["argmax_agreement"] < 0.9


def test_an_export_can_mark_a_precision_unsuitable_for_its_network() -> None:
    metadata = {UNSUITABLE_PRECISIONS: ["bfloat16"], f"{UNSUITABLE_PRECISIONS}_reason": "its mask moves"}
    assert run_precision(Path("m"), metadata, "bfloat16") == "float32"
    assert run_precision(Path("m"), metadata, "float16") == "float16"
    assert run_precision(Path("m"), {}, "bfloat16") == "bfloat16"


def test_the_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EFFICIENTSCN_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("EFFICIENTSCN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "efficientscn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "efficientscn"
