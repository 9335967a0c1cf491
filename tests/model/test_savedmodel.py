"""Saving SavedModels atomically with our export metadata, and reading the metadata and input contract back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.model.contract import PAPER_LOCALIZATION, InputContract
from efficientscn.model.savedmodel import (
    METADATA_FILE,
    SIGNATURE,
    read_contract,
    read_metadata,
    save_module,
)
from efficientscn.model.specs import LOCALIZATION_SPEC
from efficientscn.nn.config import LocalizationNetConfig
from efficientscn.nn.localization import build_localization_net
from efficientscn.settings import to_record
from efficientscn.versions import versions

TINY_NETWORK = LocalizationNetConfig(levels=2, filters=4, seed=0)
OTHER_CONTRACT = InputContract(spacing_mm=8.0, valid_sizes_zyx=((16, 32), (16,), (16, 48)), smoothing_sigma_mm=0.5)


class Doubler(tf.Module):
    """A tiny module with one variable and a serving `__call__`."""

    def __init__(self, factor: float = 2.0) -> None:
        super().__init__(name="doubler")
        self.factor = tf.Variable(factor)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.factor * x


def _serve(folder: Path, values: list[float]) -> np.ndarray:
    signature = tf.saved_model.load(str(folder)).signatures[SIGNATURE]
    (output,) = signature(x=tf.constant(values)).values()
    return output.numpy()


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- save_module --------------------------------------------------------------------------------------------------


def test_a_module_is_saved_with_its_call_as_the_serving_signature(tmp_path: Path) -> None:
    output = save_module(Doubler(), tmp_path / "models" / "doubler")  # the parent folder is created
    assert output == tmp_path / "models" / "doubler"
    assert (output / "saved_model.pb").is_file()
    np.testing.assert_allclose(_serve(output, [1.0, -3.0]), [2.0, -6.0])
    assert read_metadata(output) is None  # no metadata given, none written
    assert _hidden(output.parent) == []


def test_an_existing_folder_is_refused_without_overwrite_and_left_as_it_was(tmp_path: Path) -> None:
    output = tmp_path / "model"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=re.escape(str(output))):
        save_module(Doubler(), output)
    assert [p.name for p in output.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left beside it


def test_overwrite_replaces_the_whole_folder_and_leaves_no_staging_folders(tmp_path: Path) -> None:
    output = save_module(Doubler(2.0), tmp_path / "model", metadata={"run": "old"})
    (output / "stale.txt").write_text("from the old model")
    save_module(Doubler(3.0), output, overwrite=True, metadata={"run": "new"})
    assert not (output / "stale.txt").exists()
    np.testing.assert_allclose(_serve(output, [1.0]), [3.0])
    assert read_metadata(output) == {"run": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_save_keeps_the_old_model_and_leaves_no_staging_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = save_module(Doubler(2.0), tmp_path / "model")

    def fail_halfway(module: tf.Module, folder: str, **kwargs: Any) -> None:
        (Path(folder) / "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail_halfway)
    with pytest.raises(RuntimeError, match="disk full"):
        save_module(Doubler(3.0), output, overwrite=True)
    monkeypatch.undo()
    np.testing.assert_allclose(_serve(output, [1.0]), [2.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_the_metadata_is_written_inside_the_savedmodel_as_json(tmp_path: Path) -> None:
    metadata = {"stage": "localization", "iteration": 5, "nested": {"sizes": [1, 2]}}
    output = save_module(Doubler(), tmp_path / "model", metadata=metadata)
    assert json.loads((output / METADATA_FILE).read_text(encoding="utf-8")) == metadata
    assert read_metadata(output) == metadata


# --- read_metadata ------------------------------------------------------------------------------------------------


def test_a_folder_without_the_metadata_file_has_no_metadata(tmp_path: Path) -> None:
    assert read_metadata(tmp_path) is None
    (tmp_path / METADATA_FILE).mkdir(parents=True)  # a folder of that name is not the file
    assert read_metadata(tmp_path) is None


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00garbage"], ids=["syntax", "empty", "bytes"])
def test_unreadable_metadata_is_refused_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / METADATA_FILE
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"{re.escape(str(path))}: unreadable export metadata"):
        read_metadata(tmp_path)


# --- ModelSpec.save -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_localization_net() -> Any:
    return build_localization_net(TINY_NETWORK)


def test_a_network_is_saved_with_its_stage_network_default_contract_and_versions(
    tmp_path: Path, tiny_localization_net: Any
) -> None:
    output = LOCALIZATION_SPEC.save(tiny_localization_net, TINY_NETWORK, tmp_path / "localization")
    metadata = read_metadata(output)
    assert metadata is not None
    assert {"stage", "network", "contract", "versions"} <= set(metadata)
    assert "run" not in metadata and "iteration" not in metadata  # no source given
    assert metadata["stage"] == LOCALIZATION_SPEC.name == "localization"
    assert metadata["network"] == json.loads(json.dumps(to_record(TINY_NETWORK)))
    assert LOCALIZATION_SPEC.network_config(metadata["network"]) == TINY_NETWORK
    assert metadata["contract"] == json.loads(json.dumps(LOCALIZATION_SPEC.default_contract.to_record()))
    assert read_contract(output, metadata) == LOCALIZATION_SPEC.default_contract == PAPER_LOCALIZATION
    assert metadata["versions"] == versions()
    # the serving signature is the localization interface: a bool foreground mask, channels-first
    signature = tf.saved_model.load(str(output)).signatures[SIGNATURE]
    mask = signature(image=tf.zeros([1, 1, 8, 12, 16], tf.float16))["output_0"]
    assert mask.dtype == tf.bool and tuple(mask.shape) == (1, 1, 8, 12, 16)
    assert _hidden(tmp_path) == []


def test_a_network_is_saved_with_the_contract_and_source_given(tmp_path: Path, tiny_localization_net: Any) -> None:
    source = {"run": "runs/localization/cv1", "iteration": 1200}
    output = tmp_path / "model"
    LOCALIZATION_SPEC.save(tiny_localization_net, TINY_NETWORK, output, contract=OTHER_CONTRACT, source=source)
    metadata = read_metadata(output)
    assert metadata is not None
    assert metadata["run"] == "runs/localization/cv1" and metadata["iteration"] == 1200
    assert read_contract(output, metadata) == OTHER_CONTRACT != LOCALIZATION_SPEC.default_contract
    with pytest.raises(FileExistsError):
        LOCALIZATION_SPEC.save(tiny_localization_net, TINY_NETWORK, output, contract=OTHER_CONTRACT)


# --- read_contract ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, {}, {"stage": "localization", "network": {}}], ids=str)
def test_metadata_without_a_contract_gives_none(tmp_path: Path, metadata: dict[str, Any] | None) -> None:
    assert read_contract(tmp_path, metadata) is None


@pytest.mark.parametrize(
    "contract",
    [
        {**PAPER_LOCALIZATION.to_record(), "spacing_mm": 0.0},
        {**PAPER_LOCALIZATION.to_record(), "intensity_scale_hu": 1000.0},
        {**PAPER_LOCALIZATION.to_record(), "valid_sizes_zyx": [[32], [32]]},
        {**PAPER_LOCALIZATION.to_record(), "valid_sizes_zyx": [32, 48, 64]},
        {**PAPER_LOCALIZATION.to_record(), "unknown": 1},
        {"spacing_mm": 6.0},
        "6 mm",
        None,
    ],
    ids=["zero-spacing", "other-scale", "two-axes", "flat-sizes", "unknown-key", "incomplete", "string", "null"],
)
def test_an_unusable_contract_is_refused_naming_the_metadata_file(tmp_path: Path, contract: Any) -> None:
    with pytest.raises(InputError, match=f"{re.escape(str(tmp_path / METADATA_FILE))}: unusable input contract"):
        read_contract(tmp_path, {"stage": "localization", "contract": contract})
