"""The command line reads its facts from the code that uses them: stage names and aliases, defaults, help texts."""

from __future__ import annotations

import pytest

from efficientscn.cli import build_parser
from efficientscn.train.stages import SEGMENTATION, STAGES


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        build_parser(argv[0]).parse_args([*argv, "--help"])
    return _squashed(capsys.readouterr().out)


def _squashed(text: str) -> str:
    """Text without any whitespace: argparse wraps help lines anywhere, also after hyphens."""
    return "".join(text.split())


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_train_help_gives_each_stages_own_defaults(capsys: pytest.CaptureFixture[str], stage) -> None:
    text = _help(capsys, "train", stage.name)
    training = stage.config_type().training
    assert _squashed(f"Adam learning rate (default: {training.learning_rate:g})") in text
    assert _squashed(f"iterations (default: {training.max_iter:g})") in text
    assert f"OUTPUT/{stage.name}/cv<k>/" in text and _squashed(stage.model.description) in text


def test_stage_two_is_segmentation_and_scn_is_still_accepted() -> None:
    for word in ("segmentation", "scn"):
        for command in (["train", word, "--dataset", "d", "--output", "o"], ["export", word, "--run", "r"]):
            args = build_parser(command[0]).parse_args(command)
            assert args.handler.args == (SEGMENTATION.name,)
    exported = build_parser("export").parse_args(["export", "scn", "--run", "r"])
    assert str(exported.output) == "saved_models/segmentation"


def test_import_original_help_states_the_thresholds_it_checks(capsys: pytest.CaptureFixture[str]) -> None:
    from efficientscn.convert.verification import (
        LOCALIZATION_MIN_DICE,
        SEGMENTATION_MAX_DIFFERENCE,
        SEGMENTATION_MIN_AGREEMENT,
    )

    text = _help(capsys, "import-original")
    assert f"Dice>={LOCALIZATION_MIN_DICE:g}" in text and f"<={SEGMENTATION_MAX_DIFFERENCE:g}" in text
    assert f">={SEGMENTATION_MIN_AGREEMENT * 100:g}%" in text and "--probe" in text
    args = build_parser("import-original").parse_args(["import-original", "src", "dst"])
    assert (str(args.source), str(args.destination), args.probe, args.precision) == ("src", "dst", None, "auto")
    predict = build_parser("predict").parse_args(["predict", "-i", "a", "-o", "b", "--as-saved"])
    assert predict.as_saved


def test_every_output_option_is_in_the_help_and_in_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    from efficientscn.outputs.writers import LABEL_FORMATS

    from helpers import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    text = _help(capsys, "predict")
    for option in ("--format", "--dicom-seg", "--rtstruct", "--statistics", "--preview", "--report"):
        assert option in text and f"`{option}" in readme, option
    assert _squashed("{" + ",".join(LABEL_FORMATS) + "}") in text
    assert f"`--format {'|'.join(LABEL_FORMATS)}`" in readme
    onnx = _help(capsys, "export-onnx")
    assert all(option in onnx for option in ("--models", "--output", "--opset", "--overwrite"))
    assert "efficientscn export-onnx" in readme and "from efficientscn import Segmenter" in readme
    args = build_parser("predict").parse_args(["predict", "-i", "a", "-o", "b", "--format", "dicom-seg"])
    assert (args.label_format, args.companions) == ("dicom-seg", None)
    both = build_parser("predict").parse_args(["predict", "-i", "a", "-o", "b", "--statistics", "--dicom-seg"])
    assert both.companions == ["statistics", "dicom-seg"]
    with pytest.raises(SystemExit):
        build_parser("predict").parse_args(["predict", "-i", "a", "-o", "b", "--format", "png"])
