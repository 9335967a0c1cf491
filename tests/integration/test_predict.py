"""`efficientscn predict` end to end: geometry on every real CT variant, the original's localization model,
robust batches, resume, the report and preview, the traced utils module, `predict.sh` and the scripts."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import highdicom
import keras
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tensorflow as tf

from efficientscn.cli import main
from efficientscn.imaging.canonical import CanonicalCT, to_canonical
from efficientscn.imaging.geometry import OBLIQUE_TOLERANCE_DEGREES, axis_aligned_grid, grid_of, obliquity_degrees
from efficientscn.imaging.read import read_ct, read_image, read_label
from efficientscn.imaging.resample import resample_onto
from efficientscn.infer.models import load_network
from efficientscn.infer.pipeline import (
    InferenceConfig,
    localization_spacing,
)
from efficientscn.infer.runtime import default_slab_budget
from efficientscn.infer.utils_module import load_utils
from efficientscn.labels import ORGAN_NAMES
from efficientscn.model.contract import PAPER_LOCALIZATION
from efficientscn.model.folder import SHIPPED_MODELS
from efficientscn.model.specs import LOCALIZATION_SPEC, SEGMENTATION_SPEC
from efficientscn.nn.localization import (
    LocalizationNetConfig,
    build_localization_net,
    load_original_localization_weights,
)
from efficientscn.nn.scn import SCNConfig
from efficientscn.outputs.dicom_seg import dicom_seg_problem
from efficientscn.outputs.existing import existing_label_problem
from efficientscn.segmenter import Segmenter

from helpers import (
    REPO_ROOT,
    dicom_headers,
    require_original_models,
    seg_label_volume,
    seg_source_slices,
    shared_case,
)

logger = logging.getLogger(__name__)


GEOMETRY_CASES = (
    "ts_example_ct",
    "ts_example_ct_sm",
    "ts_example_ct_sm_lpi",
    "ts_example_ct_sm_asl",
    "ts_example_ct_sm_oblique",
    "ts_example_ct_sm_aniso",
    "ts_example_ct_dicom_oblique",
)


def _untrained_scn(folder: Path, seed: int) -> None:
    """An SCN of the paper's size with seeded random weights, exported: labels are arbitrary, geometry is not."""
    SEGMENTATION_SPEC.save(SEGMENTATION_SPEC.build(SCNConfig(seed=seed)), SCNConfig(seed=seed), folder / "segmentation")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder as export writes it: the original's localization weights in our network, a seeded SCN."""
    folder = tmp_path_factory.mktemp("models")
    localization = build_localization_net()
    load_original_localization_weights(localization, require_original_models() / "localization")
    LOCALIZATION_SPEC.save(localization, LocalizationNetConfig(), folder / "localization")
    _untrained_scn(folder, seed=0)
    return folder


def _link_cases(folder: Path, case_ids: tuple[str, ...]) -> dict[str, Path]:
    """Symlinks `<id>_0000.nii.gz` to shared cases; returns the label path per case ID."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for case_id in case_ids:
        case = shared_case(case_id)
        (folder / f"{case_id}_0000.nii.gz").symlink_to(case.image)
        labels[case_id] = case.label
    return labels


def _predict(*args: str | Path) -> int:
    return main(["predict", "-q", *map(str, args)])


def _write_bad_inputs(folder: Path) -> dict[str, str]:
    """Broken inputs beside good ones; returns the expected error text per file name."""
    good = shared_case("ts_example_ct_sm")
    data = good.image.read_bytes()
    (folder / "truncated_0000.nii.gz").write_bytes(data[: len(data) // 2])
    (folder / "text_0000.nii.gz").write_bytes(gzip.compress(b"not an image at all\n" * 100))
    flat = sitk.Image(64, 64, sitk.sitkInt16)
    sitk.WriteImage(flat, str(folder / "flat_0000.nii.gz"))
    four_d = sitk.Image([8, 8, 8, 3], sitk.sitkInt16)
    sitk.WriteImage(four_d, str(folder / "fourd_0000.nii.gz"))
    air = sitk.Image(64, 64, 64, sitk.sitkInt16) - 1024
    air.SetSpacing((3.0, 3.0, 3.0))
    sitk.WriteImage(sitk.Cast(air, sitk.sitkInt16), str(folder / "air_0000.nii.gz"))
    thin = sitk.Image(128, 128, 3, sitk.sitkInt16)
    thin.SetSpacing((0.8, 0.8, 1.0))
    sitk.WriteImage(thin, str(folder / "thin_0000.nii.gz"))
    (folder / "notes.txt").write_text("not a CT, ignored by name\n")
    (folder / "dangling_0000.nii.gz").symlink_to(folder / "gone.nii.gz")  # a link to nothing
    (folder / "loop_0000.nii.gz").symlink_to(folder / "loop_0000.nii.gz")  # a link to itself
    very_long = "y" * 250 + ".nii"  # its label y...y.nii.gz would need 257 bytes
    sitk.WriteImage(sitk.ReadImage(str(good.image)), str(folder / very_long))
    return {
        "dangling_0000.nii.gz": "a broken link (to",
        "loop_0000.nii.gz": "a broken link (to",
        very_long: "the label's name is 257 bytes long, more than file systems allow (255): rename the CT",
        "truncated_0000.nii.gz": "truncated",
        "text_0000.nii.gz": "not a readable image",
        "flat_0000.nii.gz": "2-D",
        "fourd_0000.nii.gz": "4-D",
        "air_0000.nii.gz": "not like a CT in Hounsfield units: soft tissue (-100 to 200 HU) of the non-air voxels: 0 %",
        "thin_0000.nii.gz": "too small",
    }


def test_labels_land_on_each_inputs_exact_grid_in_any_orientation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the shipped models, trained on these cases, and every output asked for: the label map, the DICOM
    series' SEG, the statistics; then the Python API on the same CTs gives the same labels, writing nothing."""
    labels = _link_cases(tmp_path / "in", GEOMETRY_CASES)
    dicom = shared_case("ts_example_ct_dicom").image
    (tmp_path / "in" / "dicom_case").symlink_to(dicom, target_is_directory=True)
    report_path = tmp_path / "run.json"
    arguments = ("-i", tmp_path / "in", "-o", tmp_path / "out", "--models", SHIPPED_MODELS, "--report", report_path)
    assert _predict(*arguments, "--device", "cpu", "--dicom-seg", "--statistics") == 0  # the CPU path, on any machine

    for case_id, reference in labels.items():
        written = sitk.ReadImage(str(tmp_path / "out" / f"{case_id}.nii.gz"))
        expected = sitk.ReadImage(str(reference))
        assert written.GetPixelID() == sitk.sitkUInt8
        assert written.GetSize() == expected.GetSize()
        np.testing.assert_allclose(written.GetOrigin(), expected.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(written.GetSpacing(), expected.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(written.GetDirection(), expected.GetDirection(), atol=1e-6)
        assert sitk.GetArrayViewFromImage(written).max() <= 4
    dicom_label = sitk.ReadImage(str(tmp_path / "out" / "dicom_case.nii.gz"))
    dicom_ct = read_ct(dicom)
    assert dicom_label.GetSize() == dicom_ct.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(dicom_label.GetOrigin(), dicom_ct.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(dicom_label.GetDirection(), dicom_ct.GetDirection(), atol=1e-6)

    # LPI and ASL hold the voxels of ts_example_ct_sm flipped and permuted: on the canonical grid the same CT,
    # so the same label, moved back to each file's own grid
    def canonical(case_id: str) -> np.ndarray:
        label, _ = to_canonical(read_label(tmp_path / "out" / f"{case_id}.nii.gz"))
        return sitk.GetArrayFromImage(label)

    base = canonical("ts_example_ct_sm")
    assert np.array_equal(canonical("ts_example_ct_sm_lpi"), base)
    assert np.array_equal(canonical("ts_example_ct_sm_asl"), base)

    report = json.loads(report_path.read_text())
    assert report["device"] == "cpu" and report["precision"] in ("float32", "bfloat16")
    assert {report["models"][stage]["source"] for stage in ("localization", "segmentation")} == {"rebuilt"}
    for stage in ("localization", "segmentation"):  # the shipped models say what they are, and the report too
        assert "trained on two patients" in report["models"][stage]["demonstration"]
        assert report["models"][stage]["slab_budget_mb"] == default_slab_budget() / 2**20  # --slab-memory auto
    assert report["versions"]["tensorflow"].startswith("2.21")
    cases = {Path(case["input"]).name: case for case in report["cases"]}
    assert len(cases) == len(GEOMETRY_CASES) + 1
    out = tmp_path / "out"
    for name, case in cases.items():
        assert case["status"] == "done", case
        case_name = name.removesuffix("_0000.nii.gz")
        seg = [f"{case_name}.seg.dcm"] if name == "dicom_case" else []
        outputs = [*seg, f"{case_name}.json", f"{case_name}.nii.gz"]  # the label last: it marks the case as done
        assert case["written"] == [str(out / output) for output in outputs]
        assert set(case["seconds"]) == {"read", "localization", "segmentation", "write", "statistics"} | (
            {"dicom-seg"} if name == "dicom_case" else set()
        )
        if name != "dicom_case":
            assert any(warning.startswith("no dicom-seg: ") for warning in case["warnings"])
        assert 100 < case["peak_rss_mb"] <= report["peak_rss_mb"]
        assert case["details"]["segmentation_input_zyx"][0] % 32 == 0

    # the DICOM-SEG of the DICOM series reads back equal to its label map, voxel for voxel
    assert sorted(path.name for path in out.glob("*.seg.dcm")) == ["dicom_case.seg.dcm"]
    seg = highdicom.seg.segread(out / "dicom_case.seg.dcm")
    rebuilt = seg_label_volume(seg, dicom_ct, seg_source_slices(dicom_headers(dicom), dicom_ct))
    assert rebuilt.any() and np.array_equal(rebuilt, sitk.GetArrayViewFromImage(dicom_label))

    # the statistics, against values computed here from the label and the CT
    sources = {**{case_id: shared_case(case_id).image for case_id in labels}, "dicom_case": dicom}
    for case_name, source in sources.items():
        statistics = json.loads((out / f"{case_name}.json").read_text())
        label_image = read_label(out / f"{case_name}.nii.gz")
        label, ct = sitk.GetArrayFromImage(label_image), sitk.GetArrayFromImage(read_ct(source))
        voxel_ml = float(np.prod(label_image.GetSpacing())) / 1000
        for value, organ in ORGAN_NAMES.items():
            inside = ct[label == value]
            assert statistics[organ]["voxels"] == inside.size, (case_name, organ)
            assert statistics[organ]["volume_ml"] == pytest.approx(inside.size * voxel_ml, abs=1e-3)
            if inside.size:
                assert statistics[organ]["mean_hu"] == pytest.approx(inside.mean(), abs=0.051)
                assert statistics[organ]["median_hu"] == pytest.approx(np.median(inside), abs=0.051)
                # cut off: in the first or last slice along the head-foot axis (the index axis whose direction
                # points most along world z), with at least a tenth of its largest section there
                head_foot = 2 - int(np.argmax(np.abs(np.reshape(label_image.GetDirection(), (3, 3))[2])))
                sections = (label == value).sum(axis=tuple(a for a in range(3) if a != head_foot))
                assert statistics[organ]["touches_scan_end"] == bool((sections[[0, -1]] >= 0.1 * sections.max()).any())
    table = (out / "statistics.csv").read_text().splitlines()
    assert len(table) == 1 + len(sources) * len(ORGAN_NAMES)

    # the Python API: one Segmenter, each CT in memory as SimpleITK reads it, the CLI's labels, nothing written
    warned: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warned.append  # type: ignore[method-assign]  # predict set the root's handlers up: its own
    logging.getLogger("efficientscn").addHandler(handler)
    try:
        segmenter = Segmenter(SHIPPED_MODELS, device="cpu")
    finally:
        logging.getLogger("efficientscn").removeHandler(handler)
    warned = [record for record in warned if "demonstration model" in record.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING  # once, also under -q

    def no_writing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Python API wrote a file")

    monkeypatch.setattr(sitk, "WriteImage", no_writing)
    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", no_writing)
    for case_name, source in sources.items():
        label = segmenter.segment(read_image(source), name=case_name)
        written = read_label(out / f"{case_name}.nii.gz")
        assert label.GetSize() == written.GetSize()
        np.testing.assert_allclose(label.GetOrigin(), written.GetOrigin(), atol=1e-4)
        assert np.array_equal(sitk.GetArrayViewFromImage(label), sitk.GetArrayViewFromImage(written)), case_name


@pytest.mark.slow  # tens of seconds
def test_the_original_localization_model_boxes_the_labelled_organs(tmp_path: Path) -> None:
    """The original's released SavedModel, imported by predict, in place of ours: on whole-abdomen CTs the box
    that stage 2 segments contains every labelled organ voxel."""
    original = require_original_models() / "localization"
    models = tmp_path / "models"
    models.mkdir()
    (models / "localization").symlink_to(original, target_is_directory=True)
    case_ids = ("ts_example_ct", "ts_example_ct_sm_oblique", "ts_example_ct_sm_aniso")
    labels = _link_cases(tmp_path / "in", case_ids)
    _untrained_scn(models, seed=1)  # the segmentation model is not what is checked here
    report_path = tmp_path / "run.json"
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "--models", models, "--report", report_path) == 0
    report = json.loads(report_path.read_text())
    assert report["models"]["localization"]["imported"]["verification"]["verdict"] == "verified"
    for case in report["cases"]:
        case_id = Path(case["input"]).name.removesuffix("_0000.nii.gz")
        label = read_label(labels[case_id])
        # predict resamples an oblique CT onto an axis-aligned grid first, where the nearest-neighbour label lies
        # within half a voxel of the organs: voxel centres count there, outer voxel edges elsewhere
        oblique = obliquity_degrees(label.GetDirection()) > OBLIQUE_TOLERANCE_DEGREES
        if oblique:
            label = resample_onto(label, axis_aligned_grid(grid_of(label)), "nearest", 0)
        label, _ = to_canonical(label)
        organ_index = np.argwhere(sitk.GetArrayViewFromImage(label) > 0)
        spacing_zyx = np.array(label.GetSpacing()[::-1])
        # the box is in mm from the outer edge of canonical voxel 0, z, y, x
        low = (organ_index.min(axis=0) + (0.5 if oblique else 0.0)) * spacing_zyx
        high = (organ_index.max(axis=0) + (0.5 if oblique else 1.0)) * spacing_zyx
        start, end = np.array(case["details"]["box_start_mm"]), np.array(case["details"]["box_end_mm"])
        logger.info("%s: organs %s..%s mm, box %s..%s mm", case_id, low, high, start, end)
        assert np.all(start <= low) and np.all(end >= high), case_id


@pytest.mark.slow  # tens of seconds
def test_traced_utils_module_gives_the_same_labels_as_the_functions(models: Path, tmp_path: Path) -> None:
    utils = tmp_path / "tf_utils_module"
    assert main(["trace-utils", "-q", "--output", str(utils)]) == 0
    _link_cases(tmp_path / "in", ("ts_example_ct_sm_oblique",))
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "direct", "--models", models) == 0
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "traced", "--models", models, "--utils", utils) == 0
    direct = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "direct" / "ts_example_ct_sm_oblique.nii.gz")))
    traced = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "traced" / "ts_example_ct_sm_oblique.nii.gz")))
    assert direct.any() and np.array_equal(direct, traced)


@pytest.mark.slow  # tens of seconds
def test_a_batch_finishes_good_cases_reports_bad_ones_and_resumes(models: Path, tmp_path: Path) -> None:
    inputs, output = tmp_path / "in", tmp_path / "out"
    _link_cases(inputs, ("ts_example_ct_sm",))
    expected_errors = _write_bad_inputs(inputs)
    report_path = tmp_path / "run.json"
    assert _predict("-i", inputs, "-o", output, "--models", models, "--report", report_path, "--preview") == 1
    report = json.loads(report_path.read_text())
    cases = {Path(case["input"]).name: case for case in report["cases"]}
    assert "notes.txt" not in cases
    assert cases["ts_example_ct_sm_0000.nii.gz"]["status"] == "done"
    for name, error in expected_errors.items():
        assert cases[name]["status"] == "failed" and error in cases[name]["error"], cases[name]
    assert sorted(p.name for p in output.iterdir()) == ["preview", "ts_example_ct_sm.nii.gz"]  # nothing partial
    assert (output / "preview" / "ts_example_ct_sm.png").is_file()
    assert sorted(p.name for p in inputs.iterdir()) == sorted(
        [*expected_errors, "notes.txt", "ts_example_ct_sm_0000.nii.gz"]
    )

    # a second run keeps what is there, tries the failures again, and replaces the report (a log of the run)
    written = (output / "ts_example_ct_sm.nii.gz").stat().st_mtime_ns
    assert _predict("-i", inputs, "-o", output, "--models", models, "--report", report_path) == 1
    statuses = {Path(case["input"]).name: case["status"] for case in json.loads(report_path.read_text())["cases"]}
    assert statuses["ts_example_ct_sm_0000.nii.gz"] == "skipped" and statuses["air_0000.nii.gz"] == "failed"
    for name in expected_errors:
        (inputs / name).unlink()
    assert _predict("-i", inputs, "-o", output, "--models", models, "--report", report_path) == 0
    second = json.loads(report_path.read_text())
    assert [case["status"] for case in second["cases"]] == ["skipped"]
    assert (output / "ts_example_ct_sm.nii.gz").stat().st_mtime_ns == written
    assert _predict("-i", inputs, "-o", output, "--models", models, "--overwrite") == 0
    assert (output / "ts_example_ct_sm.nii.gz").stat().st_mtime_ns != written


@pytest.mark.slow  # tens of seconds
def test_a_single_ct_file_or_dicom_folder_is_one_case(models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    _link_cases(folder, ("ts_example_ct_sm_asl",))
    ct_file = folder / "ts_example_ct_sm_asl_0000.nii.gz"
    assert _predict("-i", ct_file, "-o", tmp_path / "labels", "--models", models) == 0
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["ts_example_ct_sm_asl.nii.gz"]
    assert _predict("-i", ct_file, "-o", folder, "--models", models) == 2  # never beside the CT itself
    dicom = tmp_path / "series_042"
    shutil.copytree(shared_case("ts_example_ct_dicom").image, dicom)
    assert _predict("-i", dicom, "-o", tmp_path / "labels", "--models", models) == 0
    assert (tmp_path / "labels" / "series_042.nii.gz").is_file()
    assert _predict("-i", dicom, "-o", dicom / "labels", "--models", models) == 2
    assert not (dicom / "labels").exists()
    # a DICOM-SEG as the case's label: written alone, kept by the next run, redone when it is not whole
    seg = tmp_path / "seg" / "series_042.seg.dcm"
    assert _predict("-i", dicom, "-o", seg.parent, "--models", models, "--format", "dicom-seg") == 0
    assert sorted(p.name for p in seg.parent.iterdir()) == [seg.name]
    label = read_label(tmp_path / "labels" / "series_042.nii.gz")
    ct = read_ct(dicom)
    rebuilt = seg_label_volume(highdicom.seg.segread(seg), ct, seg_source_slices(dicom_headers(dicom), ct))
    assert np.array_equal(rebuilt, sitk.GetArrayViewFromImage(label))
    written = seg.stat().st_mtime_ns
    assert _predict("-i", dicom, "-o", seg.parent, "--models", models, "--format", "dicom-seg") == 0
    assert seg.stat().st_mtime_ns == written  # skipped: done
    seg.write_bytes(seg.read_bytes()[:-500])
    assert _predict("-i", dicom, "-o", seg.parent, "--models", models, "--format", "dicom-seg") == 0
    assert dicom_seg_problem(seg) is None  # cut short: done again
    # any other format asked for
    for label_format in ("nii", "nrrd"):
        assert _predict("-i", ct_file, "-o", tmp_path / label_format, "--models", models, "--format", label_format) == 0
        written_label = read_label(tmp_path / label_format / f"ts_example_ct_sm_asl.{label_format}")
        expected = read_label(tmp_path / "labels" / "ts_example_ct_sm_asl.nii.gz")
        assert np.array_equal(sitk.GetArrayViewFromImage(written_label), sitk.GetArrayViewFromImage(expected))


def test_the_originals_utils_module_is_refused_on_a_cpu_with_the_reason(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _link_cases(tmp_path / "in", ("ts_example_ct_sm",))
    utils = require_original_models() / "tf_utils_module"
    arguments = ("-i", tmp_path / "in", "-o", tmp_path / "out", "--models", models, "--utils", utils)
    assert _predict(*arguments, "--device", "cpu") == 2  # refused on a GPU machine's CPU as well
    assert "needs a GPU" in capsys.readouterr().err
    assert not (tmp_path / "out" / "ts_example_ct_sm.nii.gz").exists()


def test_unusable_batches_stop_before_any_work(models: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    assert _predict("-i", inputs, "-o", tmp_path / "out", "--models", models) == 2  # no CT in the folder
    _link_cases(inputs, ("ts_example_ct_sm",))
    assert _predict("-i", inputs, "-o", inputs, "--models", models) == 2  # never into the input folder
    assert _predict("-i", inputs, "-o", inputs / "labels", "--models", models) == 2
    assert _predict("-i", inputs, "-o", tmp_path / "out", "--models", tmp_path / "no_models") == 2
    for seg in (["--dicom-seg"], ["--format", "dicom-seg"]):  # a DICOM-SEG needs a DICOM series to reference
        assert _predict("-i", inputs, "-o", tmp_path / "out", "--models", models, *seg) == 2
    assert sorted(p.name for p in inputs.iterdir()) == ["ts_example_ct_sm_0000.nii.gz"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow  # tens of seconds
def test_same_output_name_twice_fails_the_second_case(models: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = shared_case("ts_example_ct_sm").image
    (inputs / "case_0000.nii.gz").symlink_to(image)
    sitk.WriteImage(sitk.ReadImage(str(image)), str(inputs / "case.nii"))  # its label: case.nii.gz as well
    report = tmp_path / "run.json"
    assert _predict("-i", inputs, "-o", tmp_path / "out", "--models", models, "--report", report) == 1
    statuses = {Path(c["input"]).name: (c["status"], c["error"]) for c in json.loads(report.read_text())["cases"]}
    assert statuses["case.nii"][0] == "done"
    assert statuses["case_0000.nii.gz"][0] == "failed" and "is that of case.nii" in statuses["case_0000.nii.gz"][1]
    # a second run reports the clash again instead of taking the existing label for that case's
    again = tmp_path / "again.json"
    assert _predict("-i", inputs, "-o", tmp_path / "out", "--models", models, "--report", again) == 1
    statuses = {Path(c["input"]).name: c["status"] for c in json.loads(again.read_text())["cases"]}
    assert statuses == {"case.nii": "skipped", "case_0000.nii.gz": "failed"}


@pytest.mark.slow  # tens of seconds
def test_predict_sh_and_the_inference_script_run_the_cli(models: Path, tmp_path: Path) -> None:
    _link_cases(tmp_path / "in", ("ts_example_ct_sm",))
    efficientscn = Path(sys.executable).with_name("efficientscn")
    environment = {
        **os.environ,
        "INPUT_DIR": str(tmp_path / "in"),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "MODELS_DIR": str(models),
        "EFFICIENTSCN": str(efficientscn),
    }
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "predict.sh"), "-q"], env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "ts_example_ct_sm.nii.gz").is_file()
    script = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "inference" / "inference.py"),
            "-i",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "script_out"),
            "--models",
            str(models),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert script.returncode == 0, script.stderr[-2000:]
    assert (tmp_path / "script_out" / "ts_example_ct_sm.nii.gz").is_file()


@pytest.mark.parametrize("case_id", ["ts_example_ct", "ts_example_ct_dicom", "ts_example_ct_sm_oblique"])
def test_bfloat16_localization_agrees_with_float32_on_real_ct(models: Path, case_id: str) -> None:
    """bfloat16 on the CPU, checked on the trained stage (the original's FLARE21 localization weights): the organ
    mask agrees with float32 on >= 99.9 % of voxels and the box moves by at most one localization voxel."""
    utils = load_utils(None)
    ct = CanonicalCT.read(shared_case(case_id).image)
    coarse = localization_spacing(ct.array_zyx.shape, ct.spacing_zyx, PAPER_LOCALIZATION, InferenceConfig())
    inputs, paddings = utils.preprocess_for_localization(
        tf.constant(ct.array_zyx.astype(np.float16)[None, None]),
        tf.constant(ct.spacing_zyx, tf.float32),
        tf.constant(coarse, tf.float32),
        tf.constant(0.0),
        *[tf.constant(sizes, tf.int32) for sizes in PAPER_LOCALIZATION.valid_sizes_zyx],
    )
    masks, boxes = {}, {}
    for precision in ("float32", "bfloat16"):
        network = load_network(models / "localization", "localization", "cpu", precision)
        masks[precision] = network.run(inputs).numpy()
        end, start = utils.bbox_from_localization_output(masks[precision], tf.constant(coarse, tf.float32), paddings)
        boxes[precision] = np.concatenate([start.numpy(), end.numpy()])
    assert keras.config.dtype_policy().name == "float32"  # rebuilt in bfloat16, the Keras policy left as found
    assert masks["float32"].sum() > 100
    assert np.mean(masks["float32"] == masks["bfloat16"]) >= 0.999
    assert np.abs(boxes["float32"] - boxes["bfloat16"]).max() <= coarse.max() + 1e-3


@pytest.mark.slow  # two batches: under a minute
def test_resume_redoes_unusable_labels_keeps_good_ones_and_never_replaces_a_ct(tmp_path: Path) -> None:
    ids = ("ts_example_ct_sm", "ts_example_ct_sm_lpi", "ts_example_ct_sm_asl")
    _link_cases(tmp_path / "in", ids)
    (tmp_path / "in" / "swapped_0000.nii.gz").symlink_to(shared_case("ts_example_ct_sm").label)  # a label map
    out = tmp_path / "out"
    out.mkdir()
    (out / "ts_example_ct_sm.nii.gz").write_bytes(b"")  # left by a run killed or on a full disk
    lpi = read_ct(shared_case("ts_example_ct_sm_lpi").image)
    good = sitk.Image(lpi.GetSize(), sitk.sitkUInt8) + 2
    good.CopyInformation(lpi)
    sitk.WriteImage(good, str(out / "ts_example_ct_sm_lpi.nii.gz"))
    kept = (out / "ts_example_ct_sm_lpi.nii.gz").read_bytes()
    shutil.copy(shared_case("ts_example_ct_sm_asl").image, out / "ts_example_ct_sm_asl.nii.gz")  # a CT, swapped in
    ct_bytes = (out / "ts_example_ct_sm_asl.nii.gz").read_bytes()
    report_path = tmp_path / "report.json"
    for extra in ([], ["--overwrite"]):
        assert _predict("-i", tmp_path / "in", "-o", out, "--report", report_path, *extra) == 1
        cases = {Path(case["input"]).name: case for case in json.loads(report_path.read_text())["cases"]}
        assert cases["ts_example_ct_sm_0000.nii.gz"]["status"] == "done"
        assert cases["ts_example_ct_sm_lpi_0000.nii.gz"]["status"] == ("done" if extra else "skipped")
        asl = cases["ts_example_ct_sm_asl_0000.nii.gz"]
        assert asl["status"] == "failed" and "holds 16-bit signed integer voxels, not a label" in asl["error"]
        assert "swapped_0000.nii.gz" not in cases  # a label map among the CTs: left out, with a warning
        assert (out / "ts_example_ct_sm_asl.nii.gz").read_bytes() == ct_bytes  # the CT is never replaced
        redone = out / "ts_example_ct_sm.nii.gz"
        assert existing_label_problem(redone, tmp_path / "in" / "ts_example_ct_sm_0000.nii.gz") is None
        assert not (out / "swapped.nii.gz").exists()
        if not extra:
            assert (out / "ts_example_ct_sm_lpi.nii.gz").read_bytes() == kept


@pytest.mark.slow  # one batch: tens of seconds
def test_a_file_name_that_is_not_utf8_is_segmented_like_any_other(tmp_path: Path) -> None:
    """ITK used to abort the whole process on it (exit 134): no later case done, no report."""
    inputs = tmp_path / "in"
    _link_cases(inputs, ("ts_example_ct_sm",))
    shutil.copy(shared_case("ts_example_ct_sm_lpi").image, inputs / os.fsdecode(b"caf\xe9_0000.nii.gz"))  # Latin-1
    report_path = tmp_path / "report.json"
    assert _predict("-i", inputs, "-o", tmp_path / "out", "--report", report_path, "--preview") == 0
    report = json.loads(report_path.read_text())
    assert [case["status"] for case in report["cases"]] == ["done", "done"]
    assert [case["details"]["spacing"] for case in report["cases"]] == ["header", "header"]
    written = sorted(os.listdir(os.fsencode(tmp_path / "out")))
    assert written == [b"caf\xe9.nii.gz", b"preview", b"ts_example_ct_sm.nii.gz"]
    label = read_label(tmp_path / "out" / os.fsdecode(b"caf\xe9.nii.gz"))
    assert label.GetSize() == read_ct(inputs / os.fsdecode(b"caf\xe9_0000.nii.gz")).GetSize()


def _predict_process(inputs: Path, output: Path, report: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-q", "-i", str(inputs)]
    command += ["-o", str(output), "--report", str(report)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_file(path: Path, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _statuses(report: Path) -> dict[str, str]:
    cases = json.loads(report.read_text())["cases"]
    return {Path(case["input"]).name.removesuffix("_0000.nii.gz"): case["status"] for case in cases}


@pytest.mark.slow  # two batches in other processes: about a minute
def test_sigterm_stops_after_the_case_in_hand_and_a_new_run_cleans_up_and_finishes(tmp_path: Path) -> None:
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    names = ("a", "b", "c", "d", "e")
    for name in names:
        (inputs / f"{name}_0000.nii.gz").symlink_to(shared_case("ts_example_ct_sm").image)
    process = _predict_process(inputs, output, tmp_path / "first.json")
    _wait_for_file(output / "a.nii.gz", process)
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 143, errors
    assert "Traceback" not in errors and "SIGTERM: stopping after the case in hand" in errors
    statuses = _statuses(tmp_path / "first.json")
    assert statuses["a"] == "done" and "not done" in statuses.values()
    assert set(statuses.values()) <= {"done", "not done"}
    assert sorted(p.name for p in output.iterdir()) == [f"{n}.nii.gz" for n in names if statuses[n] == "done"]
    # what kill -9 in the middle of a write leaves: a temporary file no run is using; the next run removes it
    left = [n for n in names if statuses[n] == "not done"]
    stale = output / f".{left[0]}.0123456789ab.partial.nii.gz"
    stale.write_bytes(b"half a label")
    assert _predict("-i", inputs, "-o", output, "--report", tmp_path / "second.json") == 0
    assert set(_statuses(tmp_path / "second.json").values()) <= {"done", "skipped"}
    assert sorted(p.name for p in output.iterdir()) == [f"{n}.nii.gz" for n in names]


@pytest.mark.slow  # two batches at once in other processes: about a minute
def test_two_runs_on_one_folder_share_its_cases_without_failures(tmp_path: Path) -> None:
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    names = [f"case{index}" for index in range(6)]
    for name in names:
        (inputs / f"{name}_0000.nii.gz").symlink_to(shared_case("ts_example_ct_sm").image)
    processes = [_predict_process(inputs, output, tmp_path / f"run{index}.json") for index in range(2)]
    for process in processes:
        _, errors = process.communicate(timeout=600)
        assert process.returncode == 0, errors
    first, second = (_statuses(tmp_path / f"run{index}.json") for index in range(2))
    for name in names:  # each case done by one run, skipped by the other
        assert sorted((first[name], second[name])) == ["done", "skipped"], (name, first[name], second[name])
    assert sorted(p.name for p in output.iterdir()) == sorted(f"{name}.nii.gz" for name in names)
    for name in names:
        assert existing_label_problem(output / f"{name}.nii.gz", inputs / f"{name}_0000.nii.gz") is None


@pytest.mark.slow  # a batch in another process: tens of seconds
def test_ctrl_c_while_starting_exits_130_without_a_traceback(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _link_cases(inputs, ("ts_example_ct_sm",))
    process = _predict_process(inputs, tmp_path / "out", tmp_path / "run.json")
    time.sleep(1)  # importing TensorFlow (about 2 s; the whole start-up takes about 3 s)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130, errors
    assert "Traceback" not in errors
    assert not (tmp_path / "out" / "ts_example_ct_sm.nii.gz").exists()


@pytest.mark.slow  # one batch: tens of seconds
def test_a_metaimage_ct_gets_a_metaimage_label_on_exactly_its_grid_which_evaluate_accepts(tmp_path: Path) -> None:
    """Far from the origin and with a direction slightly off orthonormal (within ITK's tolerance): a NIfTI label
    would hold the origin in float32 (0.0024 mm off here) and an orthonormalised direction."""
    ct = read_ct(shared_case("ts_example_ct_sm").image)
    ct.SetOrigin((1e5 + 0.123456789, -2e5 + 0.987654321, 3e5 + 0.5))
    direction = list(ct.GetDirection())
    direction[0] *= 1.0004
    ct.SetDirection(direction)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(ct, str(inputs / "far.mha"))
    assert _predict("-i", inputs, "-o", tmp_path / "out") == 0
    label = sitk.ReadImage(str(tmp_path / "out" / "far.mha"))
    assert grid_of(label).differences(grid_of(sitk.ReadImage(str(inputs / "far.mha"))), tolerance=0) == []
    reference = tmp_path / "ref"
    reference.mkdir()
    sitk.WriteImage(label, str(reference / "far.mha"))
    assert main(["evaluate", "-q", "--pred", str(tmp_path / "out"), "--ref", str(reference)]) == 0


@pytest.mark.slow  # two batches: under a minute
def test_an_implausible_input_is_refused_and_force_segments_it_with_the_warnings_in_the_report(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    ct = read_ct(shared_case("ts_example_ct_sm").image)
    inverted = sitk.GetImageFromArray(-sitk.GetArrayFromImage(ct))  # air at +1000 HU
    inverted.CopyInformation(ct)
    sitk.WriteImage(inverted, str(inputs / "inverted_0000.nii.gz"))
    report_path = tmp_path / "report.json"
    assert _predict("-i", inputs, "-o", tmp_path / "out", "--report", report_path) == 1
    case = json.loads(report_path.read_text())["cases"][0]
    assert case["status"] == "failed" and "not like a CT in Hounsfield units" in case["error"]
    assert "--force segments it anyway" in case["error"]
    _predict("-i", inputs, "-o", tmp_path / "out", "--report", report_path, "--force")
    case = json.loads(report_path.read_text())["cases"][0]
    assert case["status"] == "done" or "no organs found" in case["error"]  # segmented, whatever it finds
    assert any("air (<= -900 HU) of all voxels" in warning for warning in case["warnings"])


def _file_size_limit(limit_bytes: int) -> None:
    """In the child process: files stop growing at `limit_bytes`, each write past it fails, as on a full disk."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@pytest.mark.slow  # a batch in another process: tens of seconds
def test_on_a_full_disk_no_broken_label_is_left_and_a_resumed_run_does_the_case(tmp_path: Path) -> None:
    """ITK's NIfTI writer used to leave a truncated label under its final name, which a resumed run skipped."""
    inputs, output = tmp_path / "in", tmp_path / "out"
    _link_cases(inputs, ("ts_example_ct_sm",))
    report = tmp_path / "run.json"
    command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-q", "-i", str(inputs)]
    command += ["-o", str(output), "--report", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=lambda: _file_size_limit(5000))
    assert done.returncode == 1, done.stderr  # its label (about 7.6 kB) cannot be written whole
    case = json.loads(report.read_text())["cases"][0]
    assert case["status"] == "failed" and "not written (is the disk full?)" in case["error"]
    assert list(output.iterdir()) == []  # no label, no temporary file
    assert _predict("-i", inputs, "-o", output, "--report", report) == 0
    assert json.loads(report.read_text())["cases"][0]["status"] == "done"


@pytest.mark.slow  # a batch in another process: tens of seconds
def test_sigterm_while_the_models_load_stops_at_once_with_the_report(tmp_path: Path) -> None:
    """Loading a machine's first models builds their graphs, about 30 s; the command used to finish it first."""
    inputs = tmp_path / "in"
    _link_cases(inputs, ("ts_example_ct_sm",))
    command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-i", str(inputs)]
    command += ["-o", str(tmp_path / "out"), "--report", str(tmp_path / "run.json")]
    environment = {**os.environ, "EFFICIENTSCN_CACHE": str(tmp_path / "cache")}  # empty: the graphs are built
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment)
    assert process.stderr is not None
    for line in process.stderr:  # the models load in the background from here on
        if "building the graphs" in line:
            break
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 143, rest
    assert time.monotonic() - signalled < 8, rest
    assert "Traceback" not in rest
    assert json.loads((tmp_path / "run.json").read_text())["cases"][0]["status"] == "not done"


@pytest.mark.slow  # two runs in other processes: under a minute
def test_a_second_run_loads_the_graphs_the_first_traced_and_labels_alike(tmp_path: Path) -> None:
    """The first run on a machine traces the networks and the pipeline's functions into the cache; a later run
    loads them instead (the files stay as they were) and gives the same label."""
    inputs = tmp_path / "in"
    _link_cases(inputs, ("ts_example_ct_sm",))
    environment = {**os.environ, "EFFICIENTSCN_CACHE": str(tmp_path / "cache")}
    labels, logs = [], []
    for run in ("first", "second"):
        command = [str(Path(sys.executable).with_name("efficientscn")), "predict", "-i", str(inputs)]
        command += ["-o", str(tmp_path / run)]  # the log at INFO says what was traced
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
        assert done.returncode == 0, done.stderr[-3000:]
        labels.append(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / run / "ts_example_ct_sm.nii.gz"))))
        logs.append(done.stderr)
        if run == "first":
            graphs = {path: path.stat().st_mtime_ns for path in (tmp_path / "cache" / "graphs").glob("*.pb")}
    stages = {path.name.split("-")[0] for path in graphs}
    assert {"localization", "segmentation", "resize_planes", "box_label_slab"} <= stages
    assert logs[0].count("traced ") >= 4 and "traced " not in logs[1]
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "cache" / "graphs").glob("*.pb")} == graphs
    np.testing.assert_array_equal(labels[0], labels[1])
    assert np.count_nonzero(labels[0]) > 0


@pytest.mark.slow  # two batches: tens of seconds
def test_a_case_whose_preview_cannot_be_written_is_not_done_and_a_new_run_does_it_whole(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case is done with all its outputs: the label, which marks it done, is written last; when an output before
    it fails, the next run does the case again and replaces what the failed attempt wrote."""
    import efficientscn.outputs.writers

    _link_cases(tmp_path / "in", ("ts_example_ct_sm",))
    out, report_path = tmp_path / "out", tmp_path / "run.json"

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(efficientscn.outputs.writers, "write_preview", disk_full)
    arguments = ("-i", tmp_path / "in", "-o", out, "--models", models, "--statistics", "--preview")
    assert _predict(*arguments, "--report", report_path) == 1
    (case,) = json.loads(report_path.read_text())["cases"]
    assert case["status"] == "failed" and "No space left" in case["error"]
    assert case["written"] == [str(out / "ts_example_ct_sm.json")]  # the statistics, before the preview failed
    assert not (out / "ts_example_ct_sm.nii.gz").exists() and not (out / "statistics.csv").exists()
    monkeypatch.undo()
    assert _predict(*arguments, "--report", report_path) == 0
    (case,) = json.loads(report_path.read_text())["cases"]
    assert case["status"] == "done" and [Path(path).name for path in case["written"]] == [
        "ts_example_ct_sm.json",
        "ts_example_ct_sm.png",
        "ts_example_ct_sm.nii.gz",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "preview",
        "statistics.csv",
        "ts_example_ct_sm.json",
        "ts_example_ct_sm.nii.gz",
    ]


@pytest.mark.slow  # two batches: tens of seconds
def test_a_dataset_folder_its_clashing_names_and_its_batch_files(models: Path, tmp_path: Path) -> None:
    """A folder as datasets ship it (CTs with their labels beside, one label stored in 16 bits, two formats of one
    case), a name that is not UTF-8, and a folder where statistics.csv should go: every CT that can be is done, the
    label maps are skipped, the clash fails its second input, and the batch's files are written or named."""
    inputs, out, report_path = tmp_path / "in", tmp_path / "out", tmp_path / "run.json"
    case = shared_case("ts_example_ct_sm")
    inputs.mkdir()
    (inputs / "a_0000.nii.gz").symlink_to(case.image)
    (inputs / "a.nii.gz").symlink_to(case.label)  # its 8-bit label beside it: told by its header
    label16 = sitk.Cast(read_label(case.label), sitk.sitkInt16)
    sitk.WriteImage(label16, str(inputs / "b_0000.nii.gz"))  # a label map in 16 bits: told when read
    (inputs / "c_0000.nii.gz").symlink_to(case.image)
    sitk.WriteImage(read_ct(case.image), str(inputs / "c.mha"))  # case c twice: would share c.json, preview/c.png
    odd = os.fsdecode(b"caf\xe9_0000.nii.gz")  # not UTF-8, as from an older system
    (inputs / odd).symlink_to(case.image)
    (out / "statistics.csv").mkdir(parents=True)  # the batch's table cannot be written
    arguments = ("-i", inputs, "-o", out, "--models", models, "--statistics", "--preview", "--report", report_path)
    assert _predict(*arguments) == 1
    report = json.loads(report_path.read_text())  # written although the table was not
    statuses = {os.fsencode(Path(record["input"]).name): record for record in report["cases"]}
    assert set(statuses) == {b"a_0000.nii.gz", b"b_0000.nii.gz", b"c.mha", b"c_0000.nii.gz", b"caf\xe9_0000.nii.gz"}
    assert {name: record["status"] for name, record in statuses.items()} == {
        b"a_0000.nii.gz": "done",
        b"b_0000.nii.gz": "skipped",
        b"c.mha": "done",
        b"c_0000.nii.gz": "failed",
        b"caf\xe9_0000.nii.gz": "done",
    }
    assert "a label map, not a CT" in statuses[b"b_0000.nii.gz"]["warnings"][0]
    assert "case ID c is that of c.mha" in statuses[b"c_0000.nii.gz"]["error"]
    assert report["file_errors"] and report["file_errors"][0].startswith(f"{out / 'statistics.csv'}: not written")
    (out / "statistics.csv").rmdir()
    (out / "a.json").write_text("{")  # damaged since: made again, not left out
    assert _predict(*arguments) == 1  # c_0000 still clashes; nothing else to do
    rows = (out / "statistics.csv").read_bytes().splitlines()
    assert sorted({row.split(b",")[0] for row in rows[1:]}) == [b"a", b"c", b"caf\xe9"]
    assert json.loads((out / "a.json").read_text())["liver"]["voxels"] > 0


@pytest.mark.slow  # one batch: tens of seconds
def test_a_ct_read_on_an_assumed_geometry_says_so_in_the_report_and_one_on_a_guessed_grid_is_refused(
    models: Path, tmp_path: Path
) -> None:
    """A NIfTI without qform and sform is segmented with the assumption in its report entry; a DICOM series without
    slice positions and a MetaImage with corrupt zlib data fail, named, and the batch goes on."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    raw = bytearray(gzip.decompress(shared_case("ts_example_ct_sm").image.read_bytes()))
    raw[252:256] = bytes(4)  # qform_code and sform_code 0
    (inputs / "bare_0000.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    series = inputs / "series"
    shutil.copytree(shared_case("ts_example_ct_dicom").image, series)
    for path in series.iterdir():
        dataset = pydicom.dcmread(path)
        del dataset.ImagePositionPatient
        dataset.save_as(path)
    sitk.WriteImage(read_ct(shared_case("ts_example_ct_sm").image), str(inputs / "zlib.mha"), useCompression=True)
    damaged = bytearray((inputs / "zlib.mha").read_bytes())
    damaged[-30_000:-29_990] = bytes(10)
    (inputs / "zlib.mha").write_bytes(bytes(damaged))
    report_path = tmp_path / "run.json"
    assert _predict("-i", inputs, "-o", tmp_path / "out", "--models", models, "--report", report_path) == 1
    cases = {Path(case["input"]).name: case for case in json.loads(report_path.read_text())["cases"]}
    bare = cases["bare_0000.nii.gz"]
    assert bare["status"] == "done" or "no organ" in bare["error"]  # an untrained SCN: whatever it finds
    assert any("NIfTI without qform and sform" in warning and "(LPS)" in warning for warning in bare["warnings"])
    assert cases["series"]["status"] == "failed"
    assert "DICOM series without ImagePositionPatient (0020,0032) in 20 of 20 files" in cases["series"]["error"]
    assert (
        cases["zlib.mha"]["status"] == "failed"
        and "zlib.mha: corrupt compressed voxel data" in cases["zlib.mha"]["error"]
    )
