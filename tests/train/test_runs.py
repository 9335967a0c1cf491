"""Runs of a stage, as a Python caller gets them: the rules for configuration files, resuming and exporting."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from efficientscn.augment import IntensityAugmentConfig
from efficientscn.errors import InputError
from efficientscn.train.runs import export_stage, fold_configs, train_stage
from efficientscn.train.stages import LOCALIZATION, SEGMENTATION


def test_a_config_file_applies_to_every_fold_and_training_flags_win(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"training": {"ema_decay": 0.99, "max_iter": 7}, "data": {"spacing_mm": 3.0}}))
    configs = fold_configs(
        SEGMENTATION, tmp_path, tmp_path / "runs", [1, 2], config_file=settings, training_changes={"max_iter": 5}
    )
    assert list(configs) == [1, 2]
    for config in configs.values():
        assert (config.training.ema_decay, config.training.max_iter, config.data.spacing_mm) == (0.99, 5, 3.0)
        assert config.training.learning_rate == SEGMENTATION.config_type().training.learning_rate


def test_resuming_refuses_settings_that_would_change_the_run_naming_them(tmp_path: Path) -> None:
    changes = {"seed": 1, "learning_rate": 1.0, "max_iter": 9}  # max_iter may change: a longer run
    with pytest.raises(InputError, match=r"drop --learning-rate, --seed$"):
        fold_configs(LOCALIZATION, tmp_path, tmp_path, [1], resume=True, training_changes=changes)
    with pytest.raises(InputError, match="drop --config"):
        fold_configs(LOCALIZATION, tmp_path, tmp_path, [1], resume=True, config_file=tmp_path / "settings.json")


def test_a_run_whose_network_inference_could_not_run_is_refused_before_training(tmp_path: Path) -> None:
    config = SEGMENTATION.config_type()
    config = replace(config, data=replace(config.data, intensity=IntensityAugmentConfig(scale=1 / 1000)))
    with pytest.raises(InputError, match="inference scales by 2048 only"):
        train_stage(SEGMENTATION, tmp_path / "dataset", tmp_path / "runs", 1, config)
    assert not (tmp_path / "runs").exists()


def test_exporting_another_stages_run_is_refused_with_the_reason(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"stage": "localization", "cv": 1}))
    with pytest.raises(InputError, match=r"config\.json: a localization run, not a segmentation run"):
        export_stage(SEGMENTATION, run, None, tmp_path / "model")
    (run / "config.json").write_text(json.dumps({"stage": "segmentation", "network": {"filters": 8}}))
    with pytest.raises(InputError, match=r"config\.json: not a usable segmentation configuration .*filters"):
        export_stage(SEGMENTATION, run, None, tmp_path / "model")
    assert not (tmp_path / "model").exists()
