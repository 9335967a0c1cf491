"""A model carries its input contract: trained on other spacings and valid sizes, exported, it is run at its own.

Both networks are trained a few iterations on one real CT with settings the paper does not use, exported as the
export command does, and `predict` is run with them. The report says which contract each network was given and
which spacings and input sizes the case was processed at; those must be the trained ones, which the paper's
defaults would not give.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efficientscn.cli import main
from efficientscn.data.localization import LocalizationDataConfig
from efficientscn.data.segmentation import SegmentationDataConfig
from efficientscn.model.contract import PAPER_SEGMENTATION
from efficientscn.model.savedmodel import read_metadata
from efficientscn.train.config import LocalizationRunConfig, SegmentationRunConfig, TrainingConfig
from efficientscn.train.runs import export_stage, train_stage
from efficientscn.train.stages import LOCALIZATION, SEGMENTATION

from helpers import shared_case

pytestmark = pytest.mark.slow  # about 1.5 minutes: both networks trained and exported

SHORT = {"test_iter": 100, "snapshot_iter": 30, "log_iter": 10, "ema_decay": 0.5, "workers": 0}
LOCALIZATION_RUN = LocalizationRunConfig(
    # 8 mm; z only 64 or 128: ts_example_ct (366 x 303 x 336 mm) is 46 x 38 x 42 voxels at 8 mm, which the
    # paper's sizes would pad to 48 along z, these to 64
    data=LocalizationDataConfig(spacing_mm=8.0, valid_sizes_zyx=((64, 128), (48, 96), (48, 96)), small_images=False),
    training=TrainingConfig(learning_rate=1e-3, max_iter=30, **SHORT),
)
SEGMENTATION_RUN = SegmentationRunConfig(
    # 3 mm and one input size, 64 voxels along each axis, smoothed by 2 mm
    data=SegmentationDataConfig(spacing_mm=3.0, valid_sizes_zyx=((64,), (64,), (64,)), smoothing_sigma_mm=2.0),
    training=TrainingConfig(learning_rate=1e-4, max_iter=2, **{**SHORT, "snapshot_iter": 2}),
)


@pytest.fixture(scope="module")
def trained_models(one_case_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both networks trained with the settings above and exported into one models folder."""
    runs, models = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("models")
    for stage, config in ((LOCALIZATION, LOCALIZATION_RUN), (SEGMENTATION, SEGMENTATION_RUN)):
        run = train_stage(stage, one_case_dataset, runs, 0, config, progress=False)  # fold 0: no test
        export_stage(stage, run, None, models / stage.name)
    return models


def test_export_records_the_input_the_network_was_trained_for(trained_models: Path) -> None:
    localization = read_metadata(trained_models / "localization")["contract"]
    assert localization == {
        "spacing_mm": 8.0,
        "valid_sizes_zyx": [[64, 128], [48, 96], [48, 96]],
        "smoothing_sigma_mm": 0.0,  # the localization input is never smoothed (docs/fidelity.md #3)
        "intensity_scale_hu": 2048.0,
    }
    segmentation = read_metadata(trained_models / "segmentation")["contract"]
    assert segmentation == {
        "spacing_mm": 3.0,
        "valid_sizes_zyx": [[64], [64], [64]],
        "smoothing_sigma_mm": 2.0,
        "intensity_scale_hu": 2048.0,
    }


def test_predict_runs_each_network_at_its_recorded_contract(trained_models: Path, tmp_path: Path) -> None:
    ct = tmp_path / "inputs" / "ts_example_ct_0000.nii.gz"
    ct.parent.mkdir()
    ct.symlink_to(shared_case("ts_example_ct").image)
    report = tmp_path / "report.json"
    arguments = ["-i", ct.parent, "-o", tmp_path / "out", "--models", trained_models, "--report", report]
    status = main(["predict", *map(str, arguments), "--device", "cpu", "-q"])
    record = json.loads(report.read_text())
    assert status == 0, record["cases"][0]["error"]
    models = record["models"]
    assert models["localization"]["contract"] == read_metadata(trained_models / "localization")["contract"]
    assert models["segmentation"]["contract"] == read_metadata(trained_models / "segmentation")["contract"]
    details = record["cases"][0]["details"]
    # 8 mm, not the paper's 6 (the scan fits the largest input, so the spacing does not grow)
    assert details["localization_spacing_mm"] == pytest.approx([8.0] * 3)
    # 336 x 303 x 366 mm (z, y, x) at 8 mm: 42, 38, 46 voxels -> 64 of (64, 128) along z, where the paper's
    # sizes (32, 48, ...) would give 48; 48 of (48, 96) along y and x
    assert details["localization_input_zyx"] == [64, 48, 48]
    # 3 mm or coarser (a box wider than 64 x 3 mm grows it), never the paper's 2 mm; 64 voxels along each axis
    assert min(details["segmentation_spacing_mm"]) >= 3.0 > PAPER_SEGMENTATION.spacing_mm
    assert details["segmentation_input_zyx"] == [64, 64, 64]
    assert (tmp_path / "out" / "ts_example_ct.nii.gz").is_file()
