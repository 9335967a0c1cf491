"""Networks from SavedModels: our exports rebuilt with their recorded contract, others with the paper's."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from efficientscn.cli import main
from efficientscn.errors import InputError
from efficientscn.infer.models import load_network
from efficientscn.model.contract import PAPER_LOCALIZATION, InputContract
from efficientscn.model.savedmodel import METADATA_FILE

from helpers import REPO_ROOT, shared_case

SHIPPED_LOCALIZATION = REPO_ROOT / "submitted_saved_models" / "localization"


def _copy_with_metadata(tmp_path: Path, change) -> Path:
    folder = tmp_path / "localization"
    shutil.copytree(SHIPPED_LOCALIZATION, folder)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    (folder / METADATA_FILE).write_text(json.dumps(change(metadata)))
    return folder


def test_a_model_runs_with_the_contract_its_export_records(tmp_path: Path) -> None:
    recorded = {"spacing_mm": 8.0, "valid_sizes_zyx": [[64, 128], [48, 96], [48, 96]], "smoothing_sigma_mm": 1.5}
    folder = _copy_with_metadata(tmp_path, lambda metadata: {**metadata, "contract": recorded})
    network = load_network(folder, "localization", "cpu", "float32")
    assert network.contract == InputContract(8.0, ((64, 128), (48, 96), (48, 96)), smoothing_sigma_mm=1.5)
    assert json.loads(json.dumps(network.describe()))["contract"] == {**recorded, "intensity_scale_hu": 2048.0}


def test_an_earlier_export_without_a_contract_gets_the_papers_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _copy_with_metadata(tmp_path, lambda metadata: {k: v for k, v in metadata.items() if k != "contract"})
    with caplog.at_level(logging.INFO, logger="efficientscn.infer.models"):
        network = load_network(folder, "localization", "cpu", "float32")
    assert network.contract == PAPER_LOCALIZATION and network.source == "rebuilt"
    said = [record.getMessage() for record in caplog.records if "no input contract recorded" in record.getMessage()]
    assert len(said) == 1 and str(folder) in said[0] and "6 mm" in said[0]


def test_an_unusable_recorded_contract_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = _copy_with_metadata(tmp_path, lambda metadata: {**metadata, "contract": {"spacing_mm": -1}})
    with pytest.raises(InputError, match=r"efficientscn\.json: unusable input contract"):
        load_network(folder, "localization", "cpu", "float32")


def test_a_truncated_variables_file_is_refused_naming_the_file_and_the_variable(tmp_path: Path) -> None:
    folder = _copy_with_metadata(tmp_path, lambda metadata: metadata)
    data = next((folder / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cannot load the localization network: .*variables/variables: variable "):
        load_network(folder, "localization", "cpu", "float32")


def test_a_report_that_cannot_be_written_stops_predict_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("")
    ct = shared_case("ts_example_ct_sm").image
    for report, problem in ((tmp_path / "a_file" / "run.json", "not a folder"), (tmp_path, "a folder; --report")):
        arguments = ["predict", "-q", "-i", str(ct), "-o", str(tmp_path / "out"), "--report", str(report)]
        assert main(arguments) == 2
        assert problem in capsys.readouterr().err
    assert not any((tmp_path / "out").iterdir())
