"""The checks of an import against the original's graph, its probe, format detection and cache, on made-up data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from efficientscn.convert.original import cache_root, is_original_savedmodel, probe_or_phantom
from efficientscn.convert.verification import (
    LOCALIZATION_MIN_DICE,
    SEGMENTATION_MAX_DIFFERENCE,
    compare_masks,
    compare_probabilities,
)
from efficientscn.infer.models import run_precision
from efficientscn.infer.pipeline import InferenceConfig
from efficientscn.model.savedmodel import IMAGE_SIGNATURE, UNSUITABLE_PRECISIONS
from efficientscn.model.specs import LOCALIZATION_SPEC

from helpers import image_from_array


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


def test_an_empty_original_mask_is_inconclusive_unless_the_import_marks_organs() -> None:
    result = compare_masks(_mask(0), _mask(0))
    assert result["verdict"] == "inconclusive" and "dice" not in result
    assert compare_masks(_mask(0), _mask(30))["verdict"] == "failed"  # organs where the original sees none


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


def test_a_probe_that_cannot_be_processed_gives_way_to_the_phantom(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image")
    thin = tmp_path / "thin.nii.gz"  # 3 slices of 1 mm: shorter than the 30 mm inference needs
    sitk.WriteImage(image_from_array(np.zeros((3, 64, 64), np.int16), (1.0, 1.0, 1.0)), str(thin))
    for path in (garbage, thin):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            probe = probe_or_phantom(path, InferenceConfig())
        assert probe.name == "the package's phantom" and probe.ct.array_zyx.shape == (64, 80, 96)
        assert f"{path} cannot serve as the probe" in caplog.text
    readable = tmp_path / "readable.nii.gz"
    sitk.WriteImage(image_from_array(np.zeros((20, 40, 40), np.int16), (2.0, 2.0, 2.0)), str(readable))
    assert probe_or_phantom(readable, InferenceConfig()).name == str(readable)


def test_a_foreign_savedmodel_with_the_same_key_pattern_is_not_taken_for_the_originals(tmp_path: Path) -> None:
    """`model/variables/<i>` is the layout of any tf.keras model saved in a tf.Module: the parameter count decides."""
    holder = tf.__internal__.tracking.AutoTrackable()
    holder.variables = [tf.Variable(tf.zeros([3, 3, 3, 1, 8])), tf.Variable(tf.zeros([8]))]
    root = tf.Module()
    root.model = holder
    root.serve = tf.function(lambda image: image, input_signature=[IMAGE_SIGNATURE])
    tf.saved_model.save(root, str(tmp_path / "foreign"))
    checkpoint = tmp_path / "foreign" / "variables" / "variables"
    assert len(LOCALIZATION_SPEC.original_variable_keys(checkpoint)) == 2  # the key pattern matches
    assert not is_original_savedmodel(tmp_path / "foreign", "localization")
