"""The Python interface `efficientscn.Segmenter`: what it takes (a SimpleITK image, or an array with its geometry)
and refuses. Its labels are compared with the CLI's in tests/integration/test_predict.py."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

import efficientscn
from efficientscn import segmenter as segmenter_module
from efficientscn.errors import InputError
from efficientscn.infer.pipeline import InferenceConfig
from efficientscn.segmenter import Segmenter

from helpers import REPO_ROOT, shared_case


def _unloaded_segmenter() -> Segmenter:
    """A Segmenter without networks: enough for what happens before them (the CT onto the processing grid)."""
    segmenter = object.__new__(Segmenter)
    segmenter.config = InferenceConfig()
    return segmenter


def test_an_array_with_its_geometry_is_the_same_ct_as_the_image_it_came_from() -> None:
    image = sitk.ReadImage(str(shared_case("ts_example_ct_sm_asl").image))  # axes permuted: not the canonical order
    segmenter = _unloaded_segmenter()
    from_image = segmenter.canonical(image)
    from_array = segmenter.canonical(
        sitk.GetArrayFromImage(image),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=image.GetDirection(),
    )
    np.testing.assert_array_equal(from_array.array_zyx, from_image.array_zyx)
    assert from_array.spacing_zyx == from_image.spacing_zyx
    restored = from_array.restore(np.ones(from_array.array_zyx.shape, np.uint8))
    assert restored.GetSize() == image.GetSize()
    np.testing.assert_allclose(restored.GetDirection(), image.GetDirection())
    np.testing.assert_allclose(restored.GetOrigin(), image.GetOrigin())


def test_a_float_array_is_rounded_to_int16_hu_as_a_file_would_be() -> None:
    values = np.full((40, 40, 40), -1000.4, np.float32)
    values[10:30, 10:30, 10:30] = 40.6
    ct = _unloaded_segmenter().canonical(values, spacing=(2.0, 2.0, 2.0))
    assert ct.array_zyx.dtype == np.int16
    assert set(np.unique(ct.array_zyx)) == {-1000, 41}


@pytest.mark.parametrize(
    ("image", "geometry", "error", "message"),
    [
        (np.zeros((4, 4), np.int16), {"spacing": (1, 1)}, InputError, r"^ct: 2-D array"),
        (np.zeros((4, 4, 4, 2), np.int16), {"spacing": (1, 1, 1)}, InputError, r"^ct: 4-D array"),
        (np.zeros((8, 8, 8), np.int16), {}, ValueError, r"^ct: a NumPy array needs its spacing"),
        (sitk.Image(8, 8, 8, sitk.sitkInt16), {"spacing": (1, 1, 1)}, ValueError, r"^ct: a SimpleITK image carries"),
        (np.eye(8, dtype=np.uint8)[None].repeat(8, 0), {"spacing": (1, 1, 1)}, InputError, r"^ct: .*a label map"),
        (np.full((8, 8, 8), np.nan, np.float32), {"spacing": (1, 1, 1)}, InputError, r"^ct: .*NaN"),
    ],
    ids=["2-D", "4-D", "no spacing", "image with geometry", "label map", "NaN"],
)
def test_what_is_not_a_ct_is_refused_naming_it(image: object, geometry: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _unloaded_segmenter().canonical(image, name="ct", **geometry)  # type: ignore[arg-type]


_CT = np.full((40, 40, 40), -1000, np.int16)
_CT[10:30, 10:30, 10:30] = 40


@pytest.mark.parametrize("dtype", [">i2", ">f4", "<f8", np.float16, np.int32, np.uint16], ids=str)
def test_an_array_of_any_number_type_and_byte_order_is_read_as_the_values_it_holds(dtype: object) -> None:
    """SimpleITK refuses big-endian and float16 arrays with a TypeError; they hold HU like any other."""
    values = (_CT + 1024).astype(dtype) if np.dtype(dtype).kind == "u" else _CT.astype(dtype)
    ct = _unloaded_segmenter().canonical(values, spacing=(0.8, 0.8, 2.5), name="ct")
    expected = _CT + 1024 if np.dtype(dtype).kind == "u" else _CT
    np.testing.assert_array_equal(ct.array_zyx, expected)
    assert ct.spacing_zyx == (2.5, 0.8, 0.8)


@pytest.mark.parametrize(
    ("image", "geometry", "message"),
    [
        (_CT > 0, {}, r"^ct: a boolean array \(a mask\?\)"),
        (_CT.astype(object), {}, r"^ct: an array of object"),
        (_CT.astype(np.complex64), {}, r"^ct: an array of complex64"),
        (_CT.astype("U4"), {}, r"^ct: an array of <U4"),
        (_CT, {"spacing": (0.0, 1.0, 1.0)}, r"^ct: spacing \(0\.0, 1\.0, 1\.0\) is not positive"),
        (_CT, {"spacing": (1.0, -1.0, 1.0)}, r"^ct: spacing \(1\.0, -1\.0, 1\.0\) is not positive"),
        (_CT, {"spacing": (1.0, 1.0)}, r"^ct: spacing has 2 values \(1\.0, 1\.0\); expected 3"),
        (_CT, {"spacing": (1.0, 1.0, 1.0, 1.0)}, r"^ct: spacing has 4 values"),  # SimpleITK kept the first three
        (_CT, {"spacing": "111"}, r"^ct: spacing '111' is not a sequence of 3 numbers"),
        (_CT, {"direction": (1, 0, 0, 0, 1, 0)}, r"^ct: direction has 6 values .*expected 9"),
        (_CT, {"origin": (0.0, 0.0)}, r"^ct: origin has 2 values"),
        (_CT, {"origin": (np.nan, 0.0, 0.0)}, r"^ct: origin \(nan, 0\.0, 0\.0\) is not finite"),
    ],
    ids=[
        "bool",
        "object",
        "complex",
        "strings",
        "zero spacing",
        "negative spacing",
        "short spacing",
        "long spacing",
        "spacing as text",
        "short direction",
        "short origin",
        "NaN origin",
    ],
)
def test_a_bad_array_or_geometry_is_an_input_error_naming_the_ct_before_simpleitk_sees_it(
    image: np.ndarray, geometry: dict, message: str
) -> None:
    """SimpleITK's TypeError and RuntimeError (with its C++ source paths) used to come through instead."""
    with pytest.raises(InputError, match=message) as refusal:
        _unloaded_segmenter().canonical(image, name="ct", **{"spacing": (1.0, 1.0, 1.0), **geometry})
    assert ".h:" not in str(refusal.value) and ".hxx" not in str(refusal.value)


def test_the_package_offers_segmenter_without_loading_tensorflow_on_import() -> None:
    assert efficientscn.Segmenter is Segmenter
    with pytest.raises(AttributeError, match="no attribute 'Segmentor'"):
        _ = efficientscn.Segmentor  # type: ignore[attr-defined]
    code = "import sys, efficientscn; print('tensorflow' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert loaded.stdout.strip() == "False"


def test_a_ct_is_checked_once_then_gated_then_segmented(monkeypatch: pytest.MonkeyPatch) -> None:
    """`segment_canonical` refuses a CT the networks cannot take before anything else (predict's plausibility gate
    included), once per CT; a gate that refuses stops it before the networks."""
    calls: list[str] = []
    segmenter = _unloaded_segmenter()
    segmenter.device, segmenter.utils_path = "cpu", None
    segmenter.pipeline = SimpleNamespace(segment=lambda ct, spacing: calls.append("segment"))
    checked = segmenter_module.check_processable
    monkeypatch.setattr(segmenter_module, "check_processable", lambda *a: calls.append("check") or checked(*a))
    ct = segmenter.canonical(sitk.ReadImage(str(shared_case("ts_example_ct_sm").image)))
    segmenter.segment_canonical(ct, gate=lambda ct: calls.append("gate"))
    assert calls == ["check", "gate", "segment"]

    def refuse(ct: object) -> None:
        calls.append("refused")
        raise InputError("not a CT in HU")

    calls.clear()
    with pytest.raises(InputError, match="not a CT in HU"):
        segmenter.segment_canonical(ct, gate=refuse)
    assert calls == ["check", "refused"]
    calls.clear()
    thin = sitk.Image([64, 64, 3], sitk.sitkInt16)  # 3 slices of 1 mm: too small, refused before the gate
    with pytest.raises(InputError, match="too small"):
        segmenter.segment_canonical(segmenter.canonical(thin), gate=refuse)
    assert calls == ["check"]


def test_demonstration_models_are_announced_once_and_other_models_not_at_all(caplog: pytest.LogCaptureFixture) -> None:
    note = "a demonstration model, trained on two patients"
    demonstration = [SimpleNamespace(demonstration=note), SimpleNamespace(demonstration=note)]
    with caplog.at_level(logging.INFO):
        segmenter_module._warn_of_demonstration_models(Path("shipped"), demonstration)
        segmenter_module._warn_of_demonstration_models(Path("mine"), [SimpleNamespace(demonstration=None)] * 2)
    (warning,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert warning.getMessage().startswith(f"shipped: {note}.") and "import-original" in warning.getMessage()
