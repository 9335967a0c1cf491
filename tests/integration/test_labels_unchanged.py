"""The package's restructuring changed no label: `efficientscn predict` of the working tree writes, on every shared
real CT, bit-identical label maps (voxels and geometry) to those of the previous package layout.

Moving modules around must not change what the tool computes. The previous layout is extracted from git
(`PREVIOUS_LAYOUT`, with the models shipped at that commit) and run through its own CLI in a subprocess whose
PYTHONPATH puts it ahead of the editable install; the working tree runs the same command with its shipped models.
Both use the CPU and the default precision. A case that one layout refuses (the 3-slice DICOM is too small) must be
refused by the other one too: the sets of written labels and the per-case statuses must match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import REPO_ROOT, SHARED_CASES, require_shared_data, shared_case, skip_or_fail

PREVIOUS_LAYOUT = "db09321"
"""The last commit of the previous package layout, before `infer/` was given its wings (outputs, predict, convert)."""

PREDICT_TIMEOUT_SECONDS = 3600
LABEL_SUFFIX = ".nii.gz"


def _extract_previous_layout(destination: Path) -> Path:
    """Extract the package and shipped models of `PREVIOUS_LAYOUT` into `destination`; returns it."""
    try:
        found = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--verify", "--quiet", f"{PREVIOUS_LAYOUT}^{{commit}}"],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        skip_or_fail(f"git is not installed: cannot extract the previous package layout {PREVIOUS_LAYOUT}")
    if found.returncode != 0:
        skip_or_fail(
            f"commit {PREVIOUS_LAYOUT} (the previous package layout) is not in the git history of {REPO_ROOT}: "
            f"a full clone is needed to compare the labels ({found.stderr.strip() or 'no such commit'})"
        )
    destination.mkdir(parents=True)
    archive = ["git", "-C", str(REPO_ROOT), "archive", PREVIOUS_LAYOUT, "efficientscn", "submitted_saved_models"]
    with subprocess.Popen(archive, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as git:
        assert git.stdout is not None
        tar = subprocess.run(["tar", "-x", "-C", str(destination)], stdin=git.stdout, capture_output=True)
        git.stdout.close()
        git_error = git.stderr.read().decode() if git.stderr else ""
    assert git.returncode == 0, f"git archive {PREVIOUS_LAYOUT} failed: {git_error}"
    assert tar.returncode == 0, f"tar failed on git archive {PREVIOUS_LAYOUT}: {tar.stderr.decode()}"
    assert (destination / "efficientscn" / "cli.py").is_file()
    return destination


def _image_ending(image: Path) -> str:
    """`.nii.gz` and the like, or the last suffix."""
    return LABEL_SUFFIX if image.name.endswith(LABEL_SUFFIX) else image.suffix


def _link_cases(folder: Path) -> dict[str, str]:
    """Symlink every shared case's image (a file or a DICOM folder) into `folder`, named by its case ID so that
    no two collide; returns the label file name predict writes per case ID."""
    folder.mkdir(parents=True)
    labels = {}
    for case_id in sorted(SHARED_CASES):
        image = shared_case(case_id).image
        assert image.exists(), f"{case_id}: image {image} is missing"
        if image.is_dir():
            (folder / case_id).symlink_to(image, target_is_directory=True)
        else:
            (folder / f"{case_id}_0000{_image_ending(image)}").symlink_to(image)
        labels[case_id] = f"{case_id}{LABEL_SUFFIX}"
    return labels


def _environment(previous_layout: Path | None) -> dict[str, str]:
    """The subprocess environment: the previous layout first on PYTHONPATH, or no PYTHONPATH for the working tree."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if previous_layout is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(previous_layout), os.environ.get("PYTHONPATH")]))
    return env


def _imported_package(env: dict[str, str], cwd: Path) -> Path:
    """Where a subprocess with `env` imports `efficientscn` from: its package folder."""
    result = subprocess.run(
        [sys.executable, "-c", "import efficientscn; print(efficientscn.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"cannot import efficientscn: {result.stderr}"
    return Path(result.stdout.strip()).resolve().parent


def _predict(inputs: Path, output: Path, models: Path, env: dict[str, str], cwd: Path) -> tuple[int, dict, str]:
    """Run `efficientscn predict` on the CPU in a subprocess; returns the exit status, its report and its stderr."""
    report = output.with_name(f"{output.name}_report.json")
    command = [sys.executable, "-m", "efficientscn.cli", "predict", "-i", str(inputs), "-o", str(output)]
    command += ["--models", str(models), "--device", "cpu", "--report", str(report), "--quiet"]
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=PREDICT_TIMEOUT_SECONDS)
    assert result.returncode in (0, 1), f"predict could not run (exit {result.returncode}):\n{result.stderr[-5000:]}"
    assert report.is_file(), f"predict wrote no report {report}:\n{result.stderr[-5000:]}"
    return result.returncode, json.loads(report.read_text()), result.stderr


def _statuses(report: dict) -> dict[str, tuple[str, str | None]]:
    """Status and error per label file name in a predict report."""
    return {Path(case["output"]).name: (case["status"], case.get("error")) for case in report["cases"]}


def _written(folder: Path) -> set[str]:
    """The label files in a predict output folder."""
    return {path.name for path in folder.glob(f"*{LABEL_SUFFIX}")} if folder.is_dir() else set()


def _difference(case_id: str, old_path: Path, new_path: Path) -> str | None:
    """How two label files of a case differ, or None when voxels and geometry are identical."""
    old, new = sitk.ReadImage(str(old_path)), sitk.ReadImage(str(new_path))
    problems = []
    for what in ("PixelIDTypeAsString", "Size", "Spacing", "Origin", "Direction"):
        old_value, new_value = getattr(old, f"Get{what}")(), getattr(new, f"Get{what}")()
        if old_value != new_value:
            problems.append(f"{what.removesuffix('AsString')} {old_value} -> {new_value}")
    old_voxels, new_voxels = sitk.GetArrayViewFromImage(old), sitk.GetArrayViewFromImage(new)
    if old_voxels.shape != new_voxels.shape:
        problems.append(f"voxel arrays of shape {old_voxels.shape} -> {new_voxels.shape}")
    elif not np.array_equal(old_voxels, new_voxels):
        differing = int(np.count_nonzero(old_voxels != new_voxels))
        problems.append(f"{differing} of {old_voxels.size} voxels differ")
    return f"{case_id}: {'; '.join(problems)}" if problems else None


@pytest.mark.slow
def test_restructuring_left_every_label_bit_identical(tmp_path: Path) -> None:
    """Predict with the previous layout and with the working tree on every shared CT: the same cases fail, and
    every written label has the same voxels and geometry."""
    require_shared_data()
    previous = _extract_previous_layout(tmp_path / "previous_layout")
    labels = _link_cases(tmp_path / "in")
    run_folder = tmp_path / "run"  # not the repository: `python -m` puts the working directory first on sys.path
    run_folder.mkdir()

    old_env, new_env = _environment(previous), _environment(None)
    old_package, new_package = _imported_package(old_env, run_folder), _imported_package(new_env, run_folder)
    assert old_package == (previous / "efficientscn").resolve(), (
        f"the previous layout's subprocess imports efficientscn from {old_package}, not from the extracted "
        f"{previous / 'efficientscn'}: the editable install wins over PYTHONPATH"
    )
    assert new_package == (REPO_ROOT / "efficientscn").resolve(), f"the working tree's efficientscn is {new_package}"

    old_out, new_out = tmp_path / "out_previous", tmp_path / "out_current"
    old_status, old_report, old_log = _predict(
        tmp_path / "in", old_out, previous / "submitted_saved_models", old_env, run_folder
    )
    new_status, new_report, new_log = _predict(
        tmp_path / "in", new_out, REPO_ROOT / "submitted_saved_models", new_env, run_folder
    )

    assert old_report["precision"] == new_report["precision"], "the two runs used different precisions"
    old_cases, new_cases = _statuses(old_report), _statuses(new_report)
    assert set(old_cases) == set(new_cases) == set(labels.values()), "the two layouts found different cases"
    assert {name: status for name, (status, _) in old_cases.items()} == {
        name: status for name, (status, _) in new_cases.items()
    }, f"cases failed differently:\nprevious: {old_cases}\ncurrent: {new_cases}\ncurrent's log:\n{new_log[-5000:]}"
    assert old_status == new_status
    old_written, new_written = _written(old_out), _written(new_out)
    assert old_written == new_written, f"different labels written: previous {old_written}, current {new_written}"
    assert old_written, f"the previous layout wrote no label at all:\n{old_log[-5000:]}"
    assert old_written == {name for name, (status, _) in old_cases.items() if status == "done"}

    differences = [
        difference
        for case_id, name in labels.items()
        if name in old_written and (difference := _difference(case_id, old_out / name, new_out / name))
    ]
    assert not differences, "labels changed by the restructuring:\n" + "\n".join(differences)
