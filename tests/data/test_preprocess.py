"""Preprocessing a small FLARE-layout dataset built from the shared real cases."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.cli import main
from efficientscn.data.layout import FlareDataset
from efficientscn.data.preprocess import PreprocessConfig, preprocess_dataset
from efficientscn.data.setup_files import read_id_list, read_landmark_bb
from efficientscn.imaging.geometry import grid_of, physical_bounding_box
from efficientscn.imaging.read import read_ct, read_label

from helpers import REPO_ROOT, shared_case

TRAINING = {
    "train_000": "ts_example_ct",
    "train_001": "ts_example_ct_dicom",
    "train_002": "ts_example_ct_sm_lpi",
    "train_003": "ts_example_ct_dicom_oblique",
}


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)


@pytest.fixture
def flare_dataset(tmp_path: Path) -> FlareDataset:
    """TrainingImg/TrainingMask with four real cases (one a DICOM series written as NIfTI), one validation CT."""
    dataset = FlareDataset(tmp_path / "dataset")
    for case, shared_id in TRAINING.items():
        shared = shared_case(shared_id)
        image = shared.image
        if image.is_dir():  # the FLARE layout holds NIfTI files
            image = tmp_path / f"{shared_id}.nii.gz"
            sitk.WriteImage(read_ct(shared.image), str(image))
        _link(image, dataset.training_image(case))
        _link(shared.label, dataset.training_mask(case))
    _link(shared_case("ts_example_ct_sm").image, dataset.validation_image("validation_001"))
    return dataset


def test_preprocessing_writes_small_images_boxes_and_splits(flare_dataset: FlareDataset) -> None:
    report = preprocess_dataset(flare_dataset.root, PreprocessConfig(folds=2), progress=False)
    assert report.ok and sorted(report.done) == sorted(TRAINING)

    for case in TRAINING:
        ct, mask = read_ct(flare_dataset.training_image(case)), read_label(flare_dataset.training_mask(case))
        small_ct = sitk.ReadImage(str(flare_dataset.training_image(case, small=True)))
        small_mask = sitk.ReadImage(str(flare_dataset.training_mask(case, small=True)))
        factors = np.array([2 if s < 3.0 else 1 for s in ct.GetSpacing()])
        assert small_ct.GetPixelID() == sitk.sitkInt16 and small_mask.GetPixelID() == sitk.sitkUInt8
        assert np.array(small_ct.GetSize()) == pytest.approx(np.array(ct.GetSize()) // factors)
        assert np.array(small_ct.GetSpacing()) == pytest.approx(np.array(ct.GetSpacing()) * factors)
        assert not grid_of(small_ct).differences(grid_of(small_mask))
        # subsampling keeps every factor-th voxel: the small images are exact slices of the full ones
        first_voxel = grid_of(ct).physical_to_index(small_ct.GetOrigin())
        assert first_voxel == pytest.approx((factors - 1) / 2.0, abs=1e-3)
        organ_voxels = np.count_nonzero(sitk.GetArrayViewFromImage(mask))
        small_voxels = np.count_nonzero(sitk.GetArrayViewFromImage(small_mask)) * np.prod(factors)
        assert small_voxels == pytest.approx(organ_voxels, rel=0.05)

    boxes = read_landmark_bb(flare_dataset.landmark_bb_csv)
    assert sorted(boxes) == sorted(TRAINING)
    for case in TRAINING:
        mask = read_label(flare_dataset.training_mask(case))
        low, high = physical_bounding_box(sitk.GetArrayViewFromImage(mask) > 0, grid_of(mask))
        assert np.array_equal(boxes[case][0], low) and np.array_equal(boxes[case][1], high)
    rows = flare_dataset.landmark_bb_csv.read_text().splitlines()
    assert len(rows) == 4 and all(len(row.split(",")) == 7 for row in rows)

    cv = flare_dataset.cv_dir
    assert read_id_list(cv / "all_train.txt") == sorted(TRAINING)
    assert read_id_list(cv / "all_validation.txt") == ["validation_001"]
    tests = read_id_list(cv / "1" / "test.txt") + read_id_list(cv / "2" / "test.txt")
    assert sorted(tests) == sorted(TRAINING)


def test_rerun_skips_finished_outputs(flare_dataset: FlareDataset) -> None:
    preprocess_dataset(flare_dataset.root, progress=False)
    outputs = [flare_dataset.training_image(c, small=True) for c in TRAINING] + [flare_dataset.landmark_bb_csv]
    stamps = [p.stat().st_mtime_ns for p in outputs]
    report = preprocess_dataset(flare_dataset.root, progress=False)
    assert report.ok and sorted(report.skipped) == sorted(TRAINING) and not report.done
    assert [p.stat().st_mtime_ns for p in outputs] == stamps


def _add_case_with_truncated_ct(dataset: FlareDataset, case: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    data = shared_case("ts_example_ct_sm").image.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    _link(broken, dataset.training_image(case))
    _link(shared_case("ts_example_ct_sm").label, dataset.training_mask(case))


def test_a_case_that_fails_keeps_the_cv_setup_from_being_written(flare_dataset: FlareDataset, tmp_path: Path) -> None:
    _add_case_with_truncated_ct(flare_dataset, "train_004", tmp_path)
    report = preprocess_dataset(flare_dataset.root, progress=False)
    assert list(report.failed) == ["train_004", "setup/cv"] and "train_004" in report.failed["setup/cv"]
    assert not flare_dataset.cv_dir.exists()


def test_mask_on_another_grid_than_its_ct_fails_that_case(flare_dataset: FlareDataset) -> None:
    _link(shared_case("ts_example_ct_sm").image, flare_dataset.training_image("train_004"))
    _link(shared_case("ts_example_ct_sm_aniso").label, flare_dataset.training_mask("train_004"))
    report = preprocess_dataset(flare_dataset.root, progress=False)
    assert "not on the grid of its CT" in report.failed["train_004"]
    assert "size (122, 101, 12) != (122, 101, 30)" in report.failed["train_004"]
    assert sorted(report.done) == sorted(TRAINING)


def test_box_of_a_changed_mask_is_recomputed(flare_dataset: FlareDataset, tmp_path: Path) -> None:
    preprocess_dataset(flare_dataset.root, progress=False)
    mask_path = flare_dataset.training_mask("train_002")
    label = read_label(mask_path)
    values = sitk.GetArrayFromImage(label)
    values[values == 1] = 0  # the liver is removed from the mask
    edited = sitk.GetImageFromArray(values)
    edited.CopyInformation(label)
    mask_path.unlink()
    sitk.WriteImage(edited, str(mask_path))
    os.utime(mask_path, ns=(flare_dataset.landmark_bb_csv.stat().st_mtime_ns + 10**9,) * 2)
    before = read_landmark_bb(flare_dataset.landmark_bb_csv)
    preprocess_dataset(flare_dataset.root, PreprocessConfig(small_images=False), progress=False)
    after = read_landmark_bb(flare_dataset.landmark_bb_csv)
    expected = physical_bounding_box(values > 0, grid_of(edited))
    assert not np.array_equal(np.concatenate(expected), np.concatenate(before["train_002"]))
    assert np.array_equal(np.concatenate(after["train_002"]), np.concatenate(expected))
    assert np.array_equal(after["train_000"][0], before["train_000"][0])


def test_new_case_after_the_splits_were_made_is_warned_about(
    flare_dataset: FlareDataset, caplog: pytest.LogCaptureFixture
) -> None:
    preprocess_dataset(flare_dataset.root, PreprocessConfig(small_images=False, folds=2), progress=False)
    _link(shared_case("ts_example_ct_sm").image, flare_dataset.training_image("train_004"))
    _link(shared_case("ts_example_ct_sm").label, flare_dataset.training_mask("train_004"))
    with caplog.at_level(logging.WARNING):
        report = preprocess_dataset(flare_dataset.root, PreprocessConfig(small_images=False, folds=2), progress=False)
    assert report.ok
    assert "differs from the 5 training cases on disk (1 not in it)" in caplog.text
    assert "train_004" not in read_id_list(flare_dataset.cv_dir / "all_train.txt")


def test_too_many_folds_for_the_cases_is_refused_before_any_work(flare_dataset: FlareDataset) -> None:
    assert main(["preprocess", "--dataset", str(flare_dataset.root), "--folds", "5", "-q"]) == 2
    assert not flare_dataset.training_image("train_000", small=True).exists()
    with pytest.raises(SystemExit):
        main(["preprocess", "--dataset", str(flare_dataset.root), "--folds", "1"])
    with pytest.raises(SystemExit):
        main(["preprocess", "--dataset", str(flare_dataset.root), "--localization-spacing-mm", "nan"])


def test_a_bad_case_is_reported_and_the_others_go_on(flare_dataset: FlareDataset, tmp_path: Path) -> None:
    _add_case_with_truncated_ct(flare_dataset, "train_004", tmp_path)
    _link(shared_case("ts_example_ct_sm").image, flare_dataset.training_image("train_005"))  # no mask

    exit_status = main(["preprocess", "--dataset", str(flare_dataset.root), "-q"])

    assert exit_status == 1
    for case in TRAINING:
        assert flare_dataset.training_image(case, small=True).is_file()
    assert not flare_dataset.training_image("train_004", small=True).exists()
    assert sorted(read_landmark_bb(flare_dataset.landmark_bb_csv)) == sorted(TRAINING)  # no box without its CT
    assert not flare_dataset.cv_dir.exists()  # no split may silently leave out train_005
    partial = [p for p in flare_dataset.root.rglob("*") if ".partial" in p.name]
    assert partial == []


def test_empty_or_missing_dataset_folder_exits_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["preprocess", "--dataset", str(tmp_path), "-q"]) == 2
    assert "TrainingImg: no training CTs" in capsys.readouterr().err
    assert main(["preprocess", "--dataset", str(tmp_path / "nowhere"), "-q"]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    (tmp_path / "file.txt").write_text("")
    assert main(["preprocess", "--dataset", str(tmp_path / "file.txt"), "-q"]) == 2
    assert "file.txt: not a folder" in capsys.readouterr().err


def test_preprocessing_script_keeps_the_original_usage() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "preprocessing" / "preprocessing.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--dataset" in result.stdout and "landmark_bb.csv" in result.stdout


def test_a_ct_whose_gzip_data_was_changed_is_refused_not_preprocessed(
    flare_dataset: FlareDataset, tmp_path: Path
) -> None:
    """The same validation as predict's input: the gzip CRC catches bytes changed inside the deflate stream."""
    changed = bytearray(shared_case("ts_example_ct_sm").image.read_bytes())
    middle = len(changed) // 2
    changed[middle : middle + 8] = bytes(255 - b for b in changed[middle : middle + 8])
    (tmp_path / "changed.nii.gz").write_bytes(bytes(changed))
    _link(tmp_path / "changed.nii.gz", flare_dataset.training_image("train_004"))
    _link(shared_case("ts_example_ct_sm").label, flare_dataset.training_mask("train_004"))
    report = preprocess_dataset(flare_dataset.root, PreprocessConfig(cv_setup=False), progress=False)
    assert "truncated or corrupt gzip data" in report.failed["train_004"]
    assert not flare_dataset.training_image("train_004", small=True).exists()
