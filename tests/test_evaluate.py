"""`efficientscn evaluate`: pairing by case ID, outputs, failures that do not stop the batch."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.cli import main
from efficientscn.errors import InputError
from efficientscn.evaluate import label_files
from efficientscn.imaging.read import read_label

from helpers import shared_case

CASES = ("ts_example_ct", "ts_example_ct_dicom", "ts_example_ct_sm_oblique", "dcmqi_ct3slice")


def _label_folder(folder: Path, cases=CASES) -> Path:
    folder.mkdir()
    for case in cases:
        shutil.copy(shared_case(case).label, folder / f"{case}.nii.gz")
    return folder


def test_shared_labels_against_themselves_score_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = _label_folder(tmp_path / "ref")
    prediction = _label_folder(tmp_path / "pred")
    assert main(["evaluate", "--pred", str(prediction), "--ref", str(reference), "-q"]) == 0

    rows = list(csv.DictReader((prediction / "evaluation" / "metrics.csv").open()))
    assert sorted(row["case_id"] for row in rows) == sorted(CASES)
    assert all(float(value) == 1.0 for row in rows for key, value in row.items() if key != "case_id")
    summary = json.loads((prediction / "evaluation" / "summary.json").read_text())
    assert summary["cases"] == len(CASES) and summary["failed"] == {}
    assert all(v == {"dice": 1.0, "nsd": 1.0} for v in summary["mean"].values())
    printed = capsys.readouterr().out
    assert "liver" in printed and "1.0000" in printed


def test_scores_follow_the_reference_case(tmp_path: Path) -> None:
    reference = _label_folder(tmp_path / "ref", ["ts_example_ct"])
    prediction = tmp_path / "pred"
    prediction.mkdir()
    label = read_label(reference / "ts_example_ct.nii.gz")
    values = sitk.GetArrayFromImage(label)
    values[values == 3] = 0  # the spleen is missed
    predicted = sitk.GetImageFromArray(values)
    predicted.CopyInformation(label)
    sitk.WriteImage(predicted, str(prediction / "ts_example_ct_0000.nii.gz"))  # _0000 still pairs

    assert (
        main(["evaluate", "--pred", str(prediction), "--ref", str(reference), "-o", str(tmp_path / "out"), "-q"]) == 0
    )
    mean = json.loads((tmp_path / "out" / "summary.json").read_text())["mean"]
    assert mean["spleen"] == {"dice": 0.0, "nsd": 0.0}
    assert mean["liver"] == {"dice": 1.0, "nsd": 1.0}


def test_grid_mismatch_and_missing_prediction_fail_only_their_case(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    reference = _label_folder(tmp_path / "ref", ["ts_example_ct_sm", "ts_example_ct", "ts_example_ct_dicom"])
    prediction = tmp_path / "pred"
    prediction.mkdir()
    shutil.copy(shared_case("ts_example_ct_sm_aniso").label, prediction / "ts_example_ct_sm.nii.gz")  # other grid
    shutil.copy(shared_case("ts_example_ct").label, prediction / "ts_example_ct.nii.gz")

    assert main(["evaluate", "--pred", str(prediction), "--ref", str(reference), "-q"]) == 1

    summary = json.loads((prediction / "evaluation" / "summary.json").read_text())
    assert summary["cases"] == 1
    assert "not on the grid of the reference" in summary["failed"]["ts_example_ct_sm"]
    assert "size (122, 101, 12) != (122, 101, 30)" in summary["failed"]["ts_example_ct_sm"]
    assert "no prediction for case ts_example_ct_dicom" in summary["failed"]["ts_example_ct_dicom"]
    assert summary["reference_cases"] == 3
    printed = capsys.readouterr().out
    assert "1 of 3 reference cases scored; 2 failed and left out: ts_example_ct_dicom, ts_example_ct_sm" in printed


def test_existing_results_are_kept_unless_overwrite(tmp_path: Path) -> None:
    reference = _label_folder(tmp_path / "ref", ["ts_example_ct_sm"])
    arguments = ["evaluate", "--pred", str(reference), "--ref", str(reference), "-o", str(tmp_path / "out"), "-q"]
    assert main(arguments) == 0
    (tmp_path / "out" / "metrics.csv").write_text("kept\n")
    assert main(arguments) == 2
    assert (tmp_path / "out" / "metrics.csv").read_text() == "kept\n"
    assert main([*arguments, "--overwrite"]) == 0
    assert (tmp_path / "out" / "metrics.csv").read_text().startswith("case_id,liver_dice")


def test_empty_prediction_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = _label_folder(tmp_path / "ref", ["ts_example_ct_sm"])
    (tmp_path / "pred").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(reference), "-q"]) == 2
    assert "no label files" in capsys.readouterr().err


def test_two_files_of_one_case_are_refused(tmp_path: Path) -> None:
    reference = _label_folder(tmp_path / "ref", ["ts_example_ct_sm"])
    shutil.copy(reference / "ts_example_ct_sm.nii.gz", reference / "ts_example_ct_sm_0000.nii.gz")
    with pytest.raises(InputError, match=r"two files for case ts_example_ct_sm"):
        label_files(reference)


def test_unusable_output_or_tolerance_is_refused_before_scoring(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = _label_folder(tmp_path / "ref", ["ts_example_ct_sm"])
    (tmp_path / "results.csv").write_text("")
    arguments = ["evaluate", "--pred", str(reference), "--ref", str(reference), "-q"]
    assert main([*arguments, "-o", str(tmp_path / "results.csv")]) == 2
    assert "results.csv: not a folder" in capsys.readouterr().err
    for tolerance in ("-1", "nan", "0"):
        with pytest.raises(SystemExit):
            main([*arguments, "--tolerance-mm", tolerance])


def test_console_script_explains_itself() -> None:
    script = Path(sys.executable).parent / "efficientscn"  # installed beside the interpreter running the tests
    result = subprocess.run([str(script), "evaluate", "--help"], capture_output=True, text=True, check=True)
    assert "--pred" in result.stdout and "normalised surface Dice" in result.stdout
    assert any(line.strip().startswith("--tolerance-mm") for line in result.stdout.splitlines())


def test_a_prediction_holding_nan_is_refused_not_scored(tmp_path: Path) -> None:
    """The same validation as predict's input: ITK would read the NaN of a float NIfTI as background."""
    reference = _label_folder(tmp_path / "ref", ["ts_example_ct_sm"])
    prediction = tmp_path / "pred"
    prediction.mkdir()
    label = sitk.ReadImage(str(shared_case("ts_example_ct_sm").label))
    values = sitk.GetArrayFromImage(label).astype(np.float32)
    values[0, 0, 0] = np.nan
    broken = sitk.GetImageFromArray(values)
    broken.CopyInformation(label)
    sitk.WriteImage(broken, str(prediction / "ts_example_ct_sm.nii.gz"))
    assert main(["evaluate", "--pred", str(prediction), "--ref", str(reference), "-q"]) == 1
    summary = json.loads((prediction / "evaluation" / "summary.json").read_text())
    assert "image contains 1 NaN or infinite values" in summary["failed"]["ts_example_ct_sm"]


def test_names_the_user_has_pair_with_stripped_suffixes_and_unpaired_files_are_named_first(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`predict` names a label after its CT (`patient01_ct`); a dataset names its reference otherwise."""
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for case in ("ts_example_ct", "ts_example_ct_dicom"):
        shutil.copy(shared_case(case).label, tmp_path / "pred" / f"{case}_ct.nii.gz")
        shutil.copy(shared_case(case).label, tmp_path / "ref" / f"{case}_flare.nii.gz")
    shutil.copy(shared_case("ts_example_ct_sm").label, tmp_path / "ref" / "lonely_flare.nii.gz")
    arguments = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "-q"]
    assert main([*arguments, "-o", str(tmp_path / "unpaired")]) == 1  # nothing pairs: every reference fails
    first = capsys.readouterr().err.splitlines()[0]  # before any case is scored
    assert "3 reference(s) without a prediction (failed): lonely_flare.nii.gz, ts_example_ct_dicom_flare" in first
    assert "--strip-suffix" in first
    status = main([*arguments, "-o", str(tmp_path / "out"), "--strip-suffix", "_ct", "--strip-suffix", "_flare"])
    assert status == 1  # lonely_flare still has no prediction
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"] == 2 and list(summary["failed"]) == ["lonely"]
    first = capsys.readouterr().err.splitlines()[0]
    assert "1 reference(s) without a prediction (failed): lonely_flare.nii.gz" in first


def test_the_table_says_how_often_an_organ_is_absent_from_the_reference_and_how_that_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """ts_example_ct_dicom has no kidney: its kidney score is the challenge's rule, which the table must say."""
    reference = _label_folder(tmp_path / "ref", ["ts_example_ct", "ts_example_ct_dicom"])
    prediction = _label_folder(tmp_path / "pred", ["ts_example_ct"])
    label = read_label(reference / "ts_example_ct_dicom.nii.gz")
    values = sitk.GetArrayFromImage(label)
    values[0, :4, :4] = 2  # a few "kidney" voxels where the reference has none: scored 0
    predicted = sitk.GetImageFromArray(values)
    predicted.CopyInformation(label)
    sitk.WriteImage(predicted, str(prediction / "ts_example_ct_dicom.nii.gz"))
    assert main(["evaluate", "--pred", str(prediction), "--ref", str(reference), "-q"]) == 0
    printed = capsys.readouterr().out.splitlines()
    kidney = next(line for line in printed if line.startswith("kidney"))
    assert kidney.split()[1:3] == ["0.5000", "0.5000"] and "1 of 2: 0 scored 1, 1 scored 0" in kidney
    assert next(line for line in printed if line.startswith("liver")).endswith("0 of 2")
    assert any("FLARE21's rule" in line for line in printed)
    summary = json.loads((prediction / "evaluation" / "summary.json").read_text())
    assert summary["not_in_reference"]["kidney"] == {"cases": 1, "scored_1": 0, "scored_0": 1}
    assert summary["not_in_reference"]["liver"] == {"cases": 0, "scored_1": 0, "scored_0": 0}
