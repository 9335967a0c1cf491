"""Shared fixtures; the helpers they use live in helpers.py (tests import from there, never from each other)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import SimpleITK as sitk

from efficientscn.data.layout import FlareDataset
from efficientscn.data.preprocess import PreprocessConfig, preprocess_dataset
from efficientscn.imaging.read import read_ct, read_label
from efficientscn.imaging.write import write_image_atomic
from efficientscn.model.precision import precision_policy

from helpers import MISSING, SHARED_CASES, SharedCase, require_shared_data, shared_case


@pytest.fixture(params=sorted(SHARED_CASES) or [MISSING])
def any_shared_case(request: pytest.FixtureRequest) -> SharedCase:
    """Every real case in turn: NIfTI, DICOM folders, LPI, ASL, oblique and thick-slice variants."""
    require_shared_data()
    return shared_case(request.param)


@pytest.fixture(scope="session")
def one_case_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ts_example_ct as train_000 of a preprocessed FLARE-layout dataset (its `_small` images, its organ box in
    landmark_bb.csv), with a fold 1 that trains and tests on it and fold 0 (all cases, no test). Tests read it, never
    change it."""
    case = shared_case("ts_example_ct")
    root = tmp_path_factory.mktemp("one_case")
    dataset = FlareDataset(root)
    write_image_atomic(read_ct(case.image), dataset.training_image("train_000"))
    write_image_atomic(read_label(case.label), dataset.training_mask("train_000"))
    assert preprocess_dataset(root, PreprocessConfig(cv_setup=False), progress=False).ok
    fold = dataset.cv_dir / "1"
    fold.mkdir(parents=True)
    for split in ("train.txt", "test.txt"):
        (fold / split).write_text("train_000\n")
    (dataset.cv_dir / "all_train.txt").write_text("train_000\n")
    return root


@pytest.fixture
def precision(request: pytest.FixtureRequest) -> Iterator[str]:
    """Networks built in the test are built in the precision named by the parameter (indirect), as inference and
    training build them: inside `precision_policy`, which leaves the Keras policy as it found it."""
    with precision_policy(request.param):
        yield request.param


@pytest.fixture(scope="session")
def ct_pair() -> tuple[sitk.Image, sitk.Image]:
    """ts_example_ct (122x101x112 at 3 mm, RAS) and its FLARE label, as read. Tests read them, never change them."""
    case = shared_case("ts_example_ct")
    return read_ct(case.image), read_label(case.label)


@pytest.fixture(autouse=True, scope="session")
def private_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Models predict converts (the original's, imported) go to a folder of the session, never the user's cache."""
    folder = tmp_path_factory.mktemp("model_cache")
    previous = os.environ.get("EFFICIENTSCN_CACHE")
    os.environ["EFFICIENTSCN_CACHE"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["EFFICIENTSCN_CACHE"]
    else:
        os.environ["EFFICIENTSCN_CACHE"] = previous
