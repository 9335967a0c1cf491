"""ONNX export of both networks: ONNX Runtime computes what TensorFlow computes, at two valid sizes, and the command.

Agreement with TensorFlow float32 (`load_network`, as predict runs it) on a phantom CT, the tolerances stated:
the localization mask equal on at least 99.99 % of the voxels; the SCN's float16 probabilities within one float16
step of 1 (2**-11 = 4.9e-4: both runtimes compute in float32, and a difference of 1e-7 there may round the float16
output to neighbouring values) with the argmax label equal on at least 99.99 % of the voxels.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.cli import main
from efficientscn.convert.onnx import INSTALL_HINT, METADATA_KEY, export_network, export_onnx, onnx_paths
from efficientscn.errors import InputError
from efficientscn.model.contract import INTENSITY_SCALE_HU
from efficientscn.nn.config import LocalizationNetConfig, SCNConfig
from efficientscn.phantom import PhantomGrid, make_phantom

from helpers import REPO_ROOT, require_original_models, skip_or_fail

LOCALIZATION_MIN_EQUAL = 0.9999
"""The fraction of mask voxels that must be equal in ONNX Runtime and TensorFlow."""
SEGMENTATION_MAX_DIFFERENCE = 2.0**-11
"""The largest probability difference allowed: one float16 step just below 1 (the output is float16)."""
SEGMENTATION_MIN_ARGMAX_EQUAL = 0.9999
"""The fraction of voxels whose most probable label must be the same."""

TINY_LOCALIZATION = LocalizationNetConfig(levels=2, filters=4, seed=0)
TINY_SCN = SCNConfig(local_levels=2, local_filters=4, spatial_levels=2, spatial_filters=4, seed=0)
SPACING_MM = {"localization": 6.0, "segmentation": 2.0}
PHANTOM_CENTRE_MM = {"localization": (0.0, 0.0, 0.0), "segmentation": (0.0, 25.0, 20.0)}
"""Where each input is centred on the phantom (xyz mm): the whole body, the organ box (as benchmarks/runtimes.py)."""
TINY_SIZES_ZYX = {"localization": [(32, 48, 32), (64, 32, 80)], "segmentation": [(32, 32, 64), (64, 64, 32)]}
"""Two valid sizes of the paper's contracts per network (the tiny networks keep them), small enough to be quick."""
ONNX_PACKAGES = ("tf2onnx", "onnx", "onnxruntime")


def _require_onnx() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        skip_or_fail(f"{', '.join(missing)} not installed ({INSTALL_HINT})")


def phantom_input(stage: str, size_zyx: tuple[int, int, int]) -> np.ndarray:
    """The seeded phantom CT on a stage's grid: HU / 2048 clamped to [-1, 1], float16 [1, 1, D, H, W]."""
    grid = PhantomGrid(size_zyx[::-1], (SPACING_MM[stage],) * 3, centre_mm=PHANTOM_CENTRE_MM[stage])
    ct, _ = make_phantom(grid, seed=0)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    return np.clip(hu / INTENSITY_SCALE_HU, -1.0, 1.0).astype(np.float16)[np.newaxis, np.newaxis]


def agreement(stage: str, onnx_output: np.ndarray, tensorflow_output: np.ndarray) -> dict[str, float]:
    """The figures the tolerances bound: equal mask voxels, or the largest probability difference and equal argmax."""
    assert onnx_output.shape == tensorflow_output.shape and onnx_output.dtype == tensorflow_output.dtype
    if stage == "localization":
        return {"mask_equal": float(np.mean(onnx_output == tensorflow_output))}
    difference = np.abs(onnx_output.astype(np.float32) - tensorflow_output.astype(np.float32)).max()
    equal = np.mean(np.argmax(onnx_output, axis=1) == np.argmax(tensorflow_output, axis=1))
    return {"max_difference": float(difference), "argmax_equal": float(equal)}


def assert_within_tolerance(stage: str, figures: dict[str, float]) -> None:
    if stage == "localization":
        assert figures["mask_equal"] >= LOCALIZATION_MIN_EQUAL, figures
    else:
        assert figures["max_difference"] <= SEGMENTATION_MAX_DIFFERENCE, figures
        assert figures["argmax_equal"] >= SEGMENTATION_MIN_ARGMAX_EQUAL, figures


def compare(models: Path, onnx_folder: Path, stage: str, sizes_zyx: list[tuple[int, int, int]]) -> list[dict]:
    """Each size's phantom through TensorFlow float32 and ONNX Runtime; the agreement figures per size."""
    import onnxruntime as ort
    import tensorflow as tf

    from efficientscn.infer.models import load_network

    network = load_network(models / stage, stage, "cpu", "float32")  # type: ignore[arg-type]
    session = ort.InferenceSession(str(onnx_paths(onnx_folder)[stage]), providers=["CPUExecutionProvider"])
    results = []
    for size_zyx in sizes_zyx:
        image = phantom_input(stage, size_zyx)
        (onnx_output,) = session.run(["output_0"], {"image": image})
        tensorflow_output = network.run(tf.constant(image)).numpy()
        results.append({"size_zyx": size_zyx, **agreement(stage, onnx_output, tensorflow_output)})
    return results


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder as export writes it, with tiny seeded networks (the paper's contracts)."""
    _require_onnx()
    from efficientscn.model.specs import LOCALIZATION_SPEC, SEGMENTATION_SPEC

    folder = tmp_path_factory.mktemp("tiny_models")
    for spec, network in ((LOCALIZATION_SPEC, TINY_LOCALIZATION), (SEGMENTATION_SPEC, TINY_SCN)):
        spec.save(spec.build(network), network, folder / spec.name)
    return folder


@pytest.fixture(scope="module")
def tiny_onnx(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models converted by the command: its output folder (the exit status checked by a test)."""
    output = tmp_path_factory.mktemp("tiny_onnx") / "onnx"
    assert main(["export-onnx", "-q", "--models", str(tiny_models), "--output", str(output)]) == 0
    return output


def test_the_command_writes_both_networks_with_the_savedmodels_interface(tiny_onnx: Path) -> None:
    import onnx

    assert sorted(path.name for path in tiny_onnx.iterdir()) == ["localization.onnx", "segmentation.onnx"]
    for stage, output_type, channels in (("localization", "BOOL", 1), ("segmentation", "FLOAT16", 5)):
        model = onnx.load(str(tiny_onnx / f"{stage}.onnx"))
        (image,), (output,) = model.graph.input, model.graph.output
        assert (image.name, output.name) == ("image", "output_0")
        assert onnx.TensorProto.DataType.Name(image.type.tensor_type.elem_type) == "FLOAT16"
        assert onnx.TensorProto.DataType.Name(output.type.tensor_type.elem_type) == output_type
        input_shape = [dim.dim_param or dim.dim_value for dim in image.type.tensor_type.shape.dim]
        output_shape = [dim.dim_param or dim.dim_value for dim in output.type.tensor_type.shape.dim]
        assert input_shape == ["N", 1, "D", "H", "W"] and output_shape == ["N", channels, "D", "H", "W"]
        record = json.loads({prop.key: prop.value for prop in model.metadata_props}[METADATA_KEY])
        assert record["stage"] == stage and record["contract"]["spacing_mm"] == SPACING_MM[stage]
        assert {entry.domain: entry.version for entry in model.opset_import}[""] == 17


@pytest.mark.parametrize("stage", ["localization", "segmentation"])
def test_onnx_runtime_agrees_with_tensorflow_at_two_valid_sizes(tiny_models: Path, tiny_onnx: Path, stage: str) -> None:
    for figures in compare(tiny_models, tiny_onnx, stage, TINY_SIZES_ZYX[stage]):
        assert_within_tolerance(stage, figures)


def test_existing_files_are_kept_without_overwrite(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "localization.onnx"
    existing.write_bytes(b"mine")
    assert main(["export-onnx", "-q", "--models", str(tiny_models), "--output", str(tmp_path)]) == 2
    assert existing.read_bytes() == b"mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["localization.onnx"]  # nothing converted
    assert f"{existing}: already there (use --overwrite" in capsys.readouterr().err
    with pytest.raises(FileExistsError, match="already there"):
        export_network(tiny_models / "localization", "localization", existing)


def test_overwrite_replaces_the_file_atomically(tiny_models: Path, tmp_path: Path) -> None:
    import onnx

    existing = tmp_path / "localization.onnx"
    existing.write_bytes(b"stale")
    assert export_network(tiny_models / "localization", "localization", existing, overwrite=True) == existing
    onnx.checker.check_model(str(existing))
    assert [path.name for path in tmp_path.iterdir()] == ["localization.onnx"]  # no temporary file left


def test_a_missing_onnx_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else find_spec(name, *a)
    )
    with pytest.raises(InputError, match=r'needs tf2onnx, not installed: .*pip install -e "\.\[onnx\]"'):
        export_onnx(tmp_path / "models", tmp_path / "onnx")
    assert main(["export-onnx", "--models", str(tmp_path / "models"), "--output", str(tmp_path / "onnx")]) == 2
    assert 'pip install -e ".[onnx]"' in capsys.readouterr().err
    assert not (tmp_path / "onnx").exists()


def test_a_folder_without_our_export_is_refused_before_any_conversion(tiny_models: Path, tmp_path: Path) -> None:
    from efficientscn.model.savedmodel import METADATA_FILE

    with pytest.raises(InputError, match=r"localization: no SavedModel here"):
        export_onnx(tmp_path, tmp_path / "onnx")
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_models / "localization", foreign)
    (foreign / METADATA_FILE).unlink()
    with pytest.raises(InputError, match=r"foreign: not our export \(no assets.extra/efficientscn.json\)"):
        export_network(foreign, "localization", tmp_path / "foreign.onnx")
    with pytest.raises(InputError, match=r"holds the 'localization' network, expected 'segmentation'"):
        export_network(tiny_models / "localization", "segmentation", tmp_path / "swapped.onnx")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["foreign"]


def test_the_originals_released_savedmodel_is_sent_to_import_original_first(tmp_path: Path) -> None:
    _require_onnx()
    original = require_original_models() / "localization"
    with pytest.raises(InputError, match=r"the original's released localization SavedModel.*import-original"):
        export_network(original, "localization", tmp_path / "localization.onnx")
    assert not any(tmp_path.iterdir())


SHIPPED_MODELS = REPO_ROOT / "submitted_saved_models"
SHIPPED_SIZES_ZYX = {"localization": [(80, 80, 80), (128, 48, 64)], "segmentation": [(96, 96, 160), (64, 128, 96)]}
"""The inputs a 512 x 512 x 200 CT gives each network (as benchmarks/runtimes.py), and another valid size."""


@pytest.mark.slow
def test_the_shipped_models_convert_and_agree_with_tensorflow(tmp_path: Path) -> None:
    _require_onnx()
    start = time.perf_counter()
    paths = export_onnx(SHIPPED_MODELS, tmp_path)
    seconds = time.perf_counter() - start
    figures: dict[str, Any] = {"conversion_seconds": round(seconds, 1)}
    for stage in ("localization", "segmentation"):
        assert paths[stage].is_file()
        figures[stage] = compare(SHIPPED_MODELS, tmp_path, stage, SHIPPED_SIZES_ZYX[stage])
    print(json.dumps(figures))  # the measured figures, for the record (pytest -s)
    for stage in ("localization", "segmentation"):
        for result in figures[stage]:
            assert_within_tolerance(stage, result)
