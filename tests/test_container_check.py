"""docker/check.py, the container check CI runs, judges what it sees: a label that differs from the host's in one
voxel, in its grid, by its absence, or by its owner, and a run that ends otherwise than the host's, each fail it;
pip in the image's build gets the host's network settings and none of its local folders. (The check itself, with
podman, runs in CI after the test suites.)"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import REPO_ROOT


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("container_check", REPO_ROOT / "docker" / "check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _label(array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def _run(check: ModuleType, folder: Path, labels: dict[str, sitk.Image], exit_status: int = 0) -> object:
    folder.mkdir()
    for name, image in labels.items():
        sitk.WriteImage(image, str(folder / name))
    log = folder.with_name(f"{folder.name}.log")
    log.write_text("")
    return check.Outcome(folder.name, exit_status, 1.0, folder, log)


@pytest.fixture
def label() -> np.ndarray:
    array = np.zeros((6, 8, 8), np.uint8)
    array[2:4, 2:6, 3:5] = 1
    array[4, 1:3, 1:3] = 3
    return array


def test_equal_labels_pass_and_are_counted(check: ModuleType, label: np.ndarray, tmp_path: Path) -> None:
    host = _run(check, tmp_path / "host", {"a.nii.gz": _label(label), "b.nii.gz": _label(label * 2)})
    image = _run(check, tmp_path / "image", {"a.nii.gz": _label(label), "b.nii.gz": _label(label * 2)})
    (tmp_path / "image" / "report.json").write_text("{}")  # a report beside the labels is not a label
    assert check.compare_run(image, host, ["a", "b", "c"]) == 2


@pytest.mark.parametrize("difference", ["one voxel", "spacing", "missing label", "exit status"])
def test_any_difference_from_the_host_fails_the_check(
    check: ModuleType, label: np.ndarray, tmp_path: Path, difference: str
) -> None:
    host = _run(check, tmp_path / "host", {"a.nii.gz": _label(label), "b.nii.gz": _label(label)}, exit_status=1)
    changed = label.copy()
    changed[5, 7, 7] = 4
    labels = {
        "one voxel": {"a.nii.gz": _label(label), "b.nii.gz": _label(changed)},
        "spacing": {"a.nii.gz": _label(label), "b.nii.gz": _label(label, spacing=(1.0, 1.0, 2.5))},
        "missing label": {"a.nii.gz": _label(label)},
        "exit status": {"a.nii.gz": _label(label), "b.nii.gz": _label(label)},
    }[difference]
    image = _run(check, tmp_path / "image", labels, exit_status=0 if difference == "exit status" else 1)
    with pytest.raises(check.CheckFailed, match="the host's"):
        check.compare_run(image, host, ["a", "b"])


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another owner needs root")
def test_a_label_not_owned_by_the_containers_user_fails_the_check(
    check: ModuleType, label: np.ndarray, tmp_path: Path
) -> None:
    host = _run(check, tmp_path / "host", {"a.nii.gz": _label(label)})
    image = _run(check, tmp_path / "image", {"a.nii.gz": _label(label)})
    image.owner = check.USER_ID
    with pytest.raises(check.CheckFailed, match="not owned"):
        check.compare_run(image, host, ["a"])
    os.chown(tmp_path / "image" / "a.nii.gz", check.USER_ID, check.USER_ID)
    assert check.compare_run(image, host, ["a"]) == 1


def test_pip_in_the_build_gets_the_hosts_network_settings_without_its_local_folders(check: ModuleType) -> None:
    listing = "\n".join(
        [
            ":env:.cert='/etc/ssl/host-ca.pem'",
            ":env:.find-links='/opt/wheels'",
            "global.cert='/etc/ssl/other.pem'",
            "global.constraint='/etc/xdg/pip/constraints.txt'",
            "global.extra-index-url='file:///opt/pypi/simple https://mirror.example/simple\\nfile:///opt/more'",
            "global.index-url='file:///opt/local/simple'",
            "global.trusted-host='mirror.example'",
            "user.timeout='60'",
        ]
    )
    assert check.pip_network_settings(listing) == {
        "cert": "/etc/ssl/host-ca.pem",  # the environment's, as pip takes it
        "extra-index-url": "https://mirror.example/simple",
        "trusted-host": "mirror.example",
    }
