"""Cross-validation split files and the organ box table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from efficientscn.data.layout import FlareDataset
from efficientscn.data.setup_files import (
    check_split,
    cv_folds,
    cv_setup_files,
    flare21_ids,
    fold_ids,
    read_id_list,
    read_landmark_bb,
    write_cv_setup,
    write_landmark_bb,
)
from efficientscn.errors import InputError

from helpers import REPO_ROOT, require_original_setup


def test_folds_partition_the_cases_with_the_original_sizes() -> None:
    train, _ = flare21_ids()
    folds = cv_folds(train)
    assert [len(f) for f in folds] == [90, 90, 90, 91]
    assert sorted(case for fold in folds for case in fold) == train
    assert all(fold == sorted(fold) for fold in folds)


def test_folds_depend_on_the_seed_only() -> None:
    train, _ = flare21_ids()
    assert cv_folds(train, seed=0) == cv_folds(list(reversed(train)), seed=0)
    assert cv_folds(train, seed=0) != cv_folds(train, seed=1)


def test_committed_setup_is_the_originals_folds_and_boxes() -> None:
    original = require_original_setup()
    files = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    committed = REPO_ROOT / "setup"
    assert (
        sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and p.name != "README.md") == files
    )
    for name in files:
        assert (committed / name).read_bytes() == (original / name).read_bytes(), name
    # read as training reads them: four disjoint folds of the 361 cases, each fold's train list the rest
    all_train = read_id_list(committed / "cv" / "all_train.txt")
    assert all_train == flare21_ids()[0]
    tests = [read_id_list(committed / "cv" / str(k) / "test.txt") for k in range(1, 5)]
    assert [len(fold) for fold in tests] == [90, 90, 90, 91]
    assert sorted(case for fold in tests for case in fold) == all_train
    for k, fold in enumerate(tests, start=1):
        assert sorted(read_id_list(committed / "cv" / str(k) / "train.txt")) == sorted(set(all_train) - set(fold))
        assert sorted(read_id_list(committed / "cv" / "cv_folds" / f"{5 - k}.txt")) == sorted(fold)
    assert sorted(read_landmark_bb(committed / "landmark_bb.csv")) == all_train


def test_train_and_test_of_a_fold_are_disjoint_and_cover_all_cases() -> None:
    train, validation = flare21_ids()
    files = cv_setup_files(train, validation, folds=4)
    all_train = files["all_train.txt"].split()
    assert len(all_train) == 361 and files["all_validation.txt"].split() == validation
    for k in range(1, 5):
        fold_train, fold_test = files[f"{k}/train.txt"].split(), files[f"{k}/test.txt"].split()
        assert not set(fold_train) & set(fold_test)
        assert sorted(fold_train + fold_test) == all_train


def test_existing_setup_is_kept_unless_overwrite(tmp_path: Path) -> None:
    ids = [f"case_{i}" for i in range(8)]
    assert len(write_cv_setup(tmp_path, ids, [], folds=2)) == 6
    (tmp_path / "1" / "test.txt").write_text("my_own_split\n")
    assert write_cv_setup(tmp_path, ids, [], folds=2, seed=5) == []
    assert read_id_list(tmp_path / "1" / "test.txt") == ["my_own_split"]
    write_cv_setup(tmp_path, ids, [], folds=2, overwrite=True)
    assert len(read_id_list(tmp_path / "1" / "test.txt")) == 4


def test_interrupted_setup_is_written_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from efficientscn.data import setup_files

    ids = [f"case_{i}" for i in range(8)]
    written = []
    real_write = setup_files.write_text_atomic

    def crash_on_third_file(path: Path, text: str, *, overwrite: bool = False) -> Path:
        if len(written) == 2:
            raise OSError("disk full")
        written.append(path)
        return real_write(path, text, overwrite=overwrite)

    monkeypatch.setattr(setup_files, "write_text_atomic", crash_on_third_file)
    with pytest.raises(OSError, match="disk full"):
        write_cv_setup(tmp_path, ids, [], folds=2)
    assert not (tmp_path / "all_train.txt").exists()  # the completeness marker comes last
    monkeypatch.setattr(setup_files, "write_text_atomic", real_write)
    assert len(write_cv_setup(tmp_path, ids, [], folds=2)) == 6


def test_overwrite_with_fewer_folds_removes_the_stale_ones(tmp_path: Path) -> None:
    ids = [f"case_{i}" for i in range(8)]
    write_cv_setup(tmp_path, ids, [], folds=4)
    write_cv_setup(tmp_path, ids, [], folds=2, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["1", "2"]


def test_id_lists_ignore_trailing_white_space(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("train_001\ntrain_002 \n\ntrain_003 ")
    assert read_id_list(path) == ["train_001", "train_002", "train_003"]


def test_split_naming_a_missing_case_is_refused(tmp_path: Path) -> None:
    dataset = FlareDataset(tmp_path)
    for case in ("train_000", "train_001"):
        dataset.training_image(case).parent.mkdir(exist_ok=True)
        dataset.training_image(case).write_bytes(b"")
    dataset.training_mask("train_000").parent.mkdir()
    dataset.training_mask("train_000").write_bytes(b"")
    split = tmp_path / "train.txt"
    split.write_text("train_000\n")
    assert check_split(split, dataset) == ["train_000"]
    split.write_text("train_000\ntrain_001\ntrain_002\n")
    with pytest.raises(InputError, match=r"train\.txt: 2 case\(s\) without image or mask .*train_001, train_002"):
        check_split(split, dataset)
    with pytest.raises(InputError, match="cannot read split file"):
        check_split(tmp_path / "absent.txt", dataset)


def test_fold_ids_give_train_and_test_of_a_fold_and_everything_for_fold_0(tmp_path: Path) -> None:
    dataset = FlareDataset(tmp_path)
    cases = [f"train_{i:03d}" for i in range(6)]
    for case in cases:
        for path in (dataset.training_image(case, small=True), dataset.training_mask(case, small=True)):
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"")
    write_cv_setup(dataset.cv_dir, cases, [], folds=3)
    train, test = fold_ids(dataset, 2, small=True)
    assert sorted(train + test) == cases and len(test) == 2 and not set(train) & set(test)
    assert fold_ids(dataset, 0, small=True) == (cases, [])
    with pytest.raises(InputError, match=r"cv/4/train\.txt: cannot read"):
        fold_ids(dataset, 4, small=True)
    (dataset.cv_dir / "1" / "train.txt").write_text("")
    with pytest.raises(InputError, match="no cases to train on"):
        fold_ids(dataset, 1, small=True)


def test_landmark_bb_round_trips_in_the_original_format(tmp_path: Path) -> None:
    boxes = {
        "train_001": (np.array([47.50003099441528, 106.13288116455078, 15.0]), np.array([331.0, 297.6, 247.5])),
        "train_000": (np.array([30.937488317489624, -63.8, 35.0]), np.array([297.7733271121979, 232.0, 217.5])),
    }
    path = write_landmark_bb(tmp_path / "landmark_bb.csv", boxes)
    lines = path.read_text().splitlines()
    assert lines[0] == "train_000,30.937488317489624,-63.8,35.0,297.7733271121979,232.0,217.5"
    assert lines[1].startswith("train_001,47.50003099441528,")
    reread = read_landmark_bb(path)
    assert list(reread) == ["train_000", "train_001"]
    assert np.array_equal(reread["train_001"][0], boxes["train_001"][0])


def test_landmark_bb_with_a_bad_row_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "landmark_bb.csv"
    path.write_text("train_000,1,2,3,4,5,6\ntrain_001,1,2,3\n")
    with pytest.raises(InputError, match=r"landmark_bb\.csv, line 2"):
        read_landmark_bb(path)


def test_original_landmark_bb_reads() -> None:
    original = require_original_setup() / "landmark_bb.csv"
    boxes = read_landmark_bb(original)
    assert len(boxes) == 361
    extents = np.array([high - low for low, high in boxes.values()])
    assert extents.min() > 100 and extents.max() < 400
