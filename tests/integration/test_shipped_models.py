"""The shipped demonstration models: the default of `efficientscn predict`, the README's main command runs with
them, they segment the shared cases, their model card's figures are what `efficientscn evaluate` gives, and
bfloat16 keeps their Dice within 0.005 of float32."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from efficientscn.cli import main
from efficientscn.evaluate import SUMMARY_NAME, evaluate_case
from efficientscn.labels import ORGAN_NAMES
from efficientscn.model.folder import SHIPPED_MODELS
from efficientscn.native_logs import NATIVE_LOG_LINE
from efficientscn.outputs.preview import NOTICE_RGB

from helpers import REPO_ROOT, SHARED_CASES, require_shared_data, shared_case

SHIPPED = REPO_ROOT / "submitted_saved_models"
CASES = sorted(case for case in SHARED_CASES if case != "dcmqi_ct3slice")  # 3 slices, a rough liver outline
MIN_DICE = {"liver": 0.8, "kidney": 0.3, "spleen": 0.7}
"""What the shipped models reach on every shared case that holds the organ, less a margin: trained with the
original's loss for the recipe's hour, they are at 0.86, 0.33 and 0.74 at least (their card has the means)."""


def _present_organs(case_id: str) -> list[str]:
    """The checked organs that the shared label of a case contains."""
    return [organ for organ in MIN_DICE if SHARED_CASES[case_id]["organs"][organ]["voxels"] > 0]


def _segment(folder: Path, precision: str) -> Path:
    """Predict the shared cases with the default models into folder/precision and evaluate; the evaluation folder."""
    require_shared_data()
    inputs, references = folder / "ct", folder / "labels"
    if not inputs.exists():
        inputs.mkdir(parents=True)
        references.mkdir()
        for case_id in CASES:
            case = shared_case(case_id)
            (inputs / (case_id if case.image.is_dir() else f"{case_id}_0000.nii.gz")).symlink_to(case.image)
            (references / f"{case_id}.nii.gz").symlink_to(case.label)
    output = folder / precision
    assert main(["predict", "-q", "-i", str(inputs), "-o", str(output), "--precision", precision]) == 0
    assert main(["evaluate", "-q", "--pred", str(output), "--ref", str(references)]) == 0
    return output / "evaluation"


@pytest.fixture(scope="module")
def bfloat16_evaluation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _segment(tmp_path_factory.mktemp("shipped"), "bfloat16")


def test_predict_and_the_inference_script_use_the_shipped_models_by_default() -> None:
    assert SHIPPED_MODELS == SHIPPED
    for stage in ("localization", "segmentation", "tf_utils_module"):
        assert (SHIPPED / stage / "saved_model.pb").is_file()
    assert (SHIPPED / "README.md").is_file()
    # the inference script, as the original's, takes the exported saved_models/ where there is one
    script = REPO_ROOT / "inference" / "inference.py"
    assert runpy.run_path(str(script))["models_folder"] == str(
        REPO_ROOT / "saved_models" if (REPO_ROOT / "saved_models").is_dir() else SHIPPED
    )


def test_the_readme_main_command_segments_a_shared_ct(tmp_path: Path) -> None:
    """The first command of the README's "Segment a CT", run as written with a shared CT as its scan."""
    case = shared_case("ts_example_ct")
    section = (REPO_ROOT / "README.md").read_text().split("## Segment a CT")[1].split("\n## ")[0]
    command = next(line for line in section.splitlines() if "efficientscn predict" in line)
    arguments = shlex.split(command)
    assert arguments[0] == ".venv/bin/efficientscn" and "--models" not in arguments
    arguments[0] = str(Path(sys.executable).with_name("efficientscn"))
    replacements = {"scan.nii.gz": str(case.image), "labels": str(tmp_path / "labels")}
    arguments = [replacements.get(argument, argument) for argument in arguments]
    result = subprocess.run(arguments, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # what the user reads: one warning that these are demonstration models, and no TensorFlow logging
    assert result.stderr.count("demonstration model") == 1
    assert not [line for line in result.stderr.splitlines() if NATIVE_LOG_LINE.match(line.encode())]
    preview = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels" / "preview" / "example_ct.png")))
    assert (preview[0] == NOTICE_RGB).all(axis=-1).mean() > 0.5  # and the preview says so, in its red band
    label = tmp_path / "labels" / "example_ct.nii.gz"
    scores = evaluate_case(label, case.label)
    for organ in _present_organs(case.id):
        assert scores[organ].dice >= MIN_DICE[organ], (organ, scores[organ])
    assert (tmp_path / "labels" / "preview" / "example_ct.png").is_file()


def test_shipped_models_segment_liver_kidney_and_spleen_of_every_shared_case(bfloat16_evaluation: Path) -> None:
    rows = (bfloat16_evaluation / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    rows_by_case = (dict(zip(header, row.split(","), strict=True)) for row in rows[1:])
    scores = {values["case_id"]: values for values in rows_by_case}
    assert sorted(scores) == CASES
    checked = 0
    for case_id, values in scores.items():
        for organ in _present_organs(case_id):
            assert float(values[f"{organ}_dice"]) >= MIN_DICE[organ], (case_id, organ, values[f"{organ}_dice"])
            checked += 1
    assert checked >= 2 * len(CASES)


def test_model_card_figures_are_what_evaluate_gives(bfloat16_evaluation: Path) -> None:
    summary = json.loads((bfloat16_evaluation / SUMMARY_NAME).read_text())
    card = (SHIPPED / "README.md").read_text()
    assert "demonstration model" in card and "two patients" in card and "model predictions" in card
    for organ in ORGAN_NAMES.values():
        match = re.search(rf"^\| {organ} \| ([0-9.]+) \| ([0-9.]+) \|", card, flags=re.MULTILINE)
        assert match, f"no row for {organ} in the model card"
        assert float(match.group(1)) == pytest.approx(summary["mean"][organ]["dice"], abs=5e-4)
        assert float(match.group(2)) == pytest.approx(summary["mean"][organ]["nsd"], abs=5e-4)


@pytest.mark.slow  # a second pass over the cases in float32
def test_bfloat16_changes_organ_dice_by_less_than_0_005(bfloat16_evaluation: Path, tmp_path: Path) -> None:
    float32 = json.loads((_segment(tmp_path, "float32") / SUMMARY_NAME).read_text())["mean"]
    bfloat16 = json.loads((bfloat16_evaluation / SUMMARY_NAME).read_text())["mean"]
    for organ in ORGAN_NAMES.values():
        assert abs(bfloat16[organ]["dice"] - float32[organ]["dice"]) < 0.005, organ
