"""The cases of a `predict` run: what an input names, which case owns a label name."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest

from efficientscn.errors import InputError
from efficientscn.predict.cases import Case, case_owners, find_sources, label_maps_among, without_label_maps

from helpers import shared_case


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


# --- Case ---------------------------------------------------------------------------------------------------------


def test_a_case_is_named_by_its_file_and_identified_without_its_channel_tag(tmp_path: Path) -> None:
    case = Case(tmp_path / "in" / "train_007_0000.nii.gz", tmp_path / "out" / "train_007.nii.gz")
    assert case.name == "train_007_0000.nii.gz"
    assert case.id == "train_007"
    assert Case(tmp_path / "scan.mha", tmp_path / "out" / "scan.nii.gz").id == "scan"


def test_a_dicom_folder_case_is_identified_by_its_folder_name() -> None:
    folder = shared_case("ts_example_ct_dicom").image
    case = Case(folder, Path("out") / f"{folder.name}.nii.gz")
    assert case.name == case.id == folder.name


# --- find_sources -------------------------------------------------------------------------------------------------


def test_a_single_image_file_is_the_only_source(tmp_path: Path) -> None:
    _touch(tmp_path / "in", "b_0000.nii.gz", "a_0000.nii.gz")
    assert find_sources(tmp_path / "in" / "b_0000.nii.gz", tmp_path / "out") == [tmp_path / "in" / "b_0000.nii.gz"]


def test_a_dicom_folder_is_one_case_not_a_folder_of_cases(tmp_path: Path) -> None:
    folder = shared_case("ts_example_ct_dicom").image
    assert len(list(folder.iterdir())) > 1
    assert find_sources(folder, tmp_path / "out") == [folder]


def test_a_folder_gives_its_images_and_subfolders_sorted(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _touch(inputs, "b_0000.nii.gz", "a_0000.nii.gz", "c.mha", "D_0000.NII.GZ", "e.nrrd")
    (inputs / "series").mkdir()  # a folder entry is read as a DICOM series
    expected = [inputs / name for name in ("D_0000.NII.GZ", "a_0000.nii.gz", "b_0000.nii.gz", "c.mha", "e.nrrd")]
    assert find_sources(inputs, tmp_path / "out") == [*expected, inputs / "series"]


def test_hidden_entries_are_skipped_silently_and_other_files_ignored_with_a_warning_naming_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = tmp_path / "in"
    _touch(inputs, "a_0000.nii.gz", "notes.txt", "README", ".DS_Store", ".b_0000.nii.gz")
    (inputs / ".cache").mkdir()
    with caplog.at_level(logging.WARNING, logger="efficientscn.predict.cases"):
        assert find_sources(inputs, tmp_path / "out") == [inputs / "a_0000.nii.gz"]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(inputs) in warnings[0] and "2 file(s)" in warnings[0]
    assert "notes.txt" in warnings[0] and "README" in warnings[0]
    assert ".DS_Store" not in warnings[0] and ".b_0000" not in warnings[0] and ".cache" not in warnings[0]


def test_a_folder_of_only_images_logs_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _touch(tmp_path / "in", "a_0000.nii.gz")
    with caplog.at_level(logging.WARNING, logger="efficientscn.predict.cases"):
        find_sources(tmp_path / "in", tmp_path / "out")
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize("names", [(), ("notes.txt", "labels.csv"), (".hidden_0000.nii.gz",)], ids=str)
def test_a_folder_without_any_ct_is_refused_by_name(tmp_path: Path, names: tuple[str, ...]) -> None:
    inputs = tmp_path / "in"
    _touch(inputs, *names)
    with pytest.raises(InputError, match=f"{re.escape(str(inputs))}: no CT found"):
        find_sources(inputs, tmp_path / "out")


def test_a_missing_input_is_refused_by_name(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ct.nii.gz"
    with pytest.raises(InputError, match=f"{re.escape(str(missing))}: no such file or folder"):
        find_sources(missing, tmp_path / "out")


@pytest.mark.parametrize("output", [".", "labels", "labels/deeper"])
def test_the_output_folder_may_not_be_or_lie_inside_a_folder_of_cts(tmp_path: Path, output: str) -> None:
    inputs = tmp_path / "in"
    _touch(inputs, "a_0000.nii.gz")
    with pytest.raises(InputError, match=f"{re.escape(str(inputs / output))}: the output folder is"):
        find_sources(inputs, inputs / output)


def test_the_output_folder_may_not_be_the_input_folder_under_another_name(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _touch(inputs, "a_0000.nii.gz")
    (tmp_path / "link").symlink_to(inputs, target_is_directory=True)
    with pytest.raises(InputError, match="the output folder is"):
        find_sources(inputs, tmp_path / "link")
    with pytest.raises(InputError, match="the output folder is"):
        find_sources(tmp_path / "link", tmp_path / "in" / "labels")


def test_a_single_files_label_may_not_go_beside_it(tmp_path: Path) -> None:
    _touch(tmp_path / "in", "a_0000.nii.gz")
    with pytest.raises(InputError, match="the output folder is"):
        find_sources(tmp_path / "in" / "a_0000.nii.gz", tmp_path / "in")


def test_a_single_files_labels_may_go_in_a_subfolder_beside_it(tmp_path: Path) -> None:
    """Only a folder given as input is a folder of CTs; a single CT's folder is not scanned for CTs."""
    _touch(tmp_path / "in", "a_0000.nii.gz")
    source = tmp_path / "in" / "a_0000.nii.gz"
    assert find_sources(source, tmp_path / "in" / "labels") == [source]


@pytest.mark.parametrize("inside", [False, True], ids=["same", "inside"])
def test_the_output_folder_may_not_be_or_lie_inside_a_dicom_folder(tmp_path: Path, inside: bool) -> None:
    folder = shared_case("ts_example_ct_dicom").image
    output = folder / "labels" if inside else folder
    with pytest.raises(InputError, match=f"{re.escape(str(output))}: the output folder is"):
        find_sources(folder, output)
    assert not (folder / "labels").exists()


def test_outputs_beside_the_input_folder_are_accepted(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _touch(inputs, "a_0000.nii.gz")
    assert find_sources(inputs, tmp_path / "labels") == [inputs / "a_0000.nii.gz"]
    assert find_sources(inputs, tmp_path) == [inputs / "a_0000.nii.gz"]  # the input folder's parent


# --- one case, one set of outputs ----------------------------------------------------------------------------------


def test_the_first_input_of_each_case_id_owns_it_and_every_clash_is_named_up_front(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`x.mha` and `x.nii.gz` have different labels (`x.mha`, `x.nii.gz`) but would share `x.json`, `x.seg.dcm` and
    `preview/x.png`; `x.nii` and `x_0000.nii.gz` would share the label too."""
    out = tmp_path / "out"
    cases = [
        Case(tmp_path / "x.mha", out / "x.mha"),
        Case(tmp_path / "x.nii.gz", out / "x.nii.gz"),
        Case(tmp_path / "y.nii", out / "y.nii.gz"),
        Case(tmp_path / "y_0000.nii.gz", out / "y.nii.gz"),
        Case(tmp_path / "z.nrrd", out / "z.nrrd"),
    ]
    with caplog.at_level(logging.WARNING):
        owners = case_owners(cases)
    assert owners == {"x": tmp_path / "x.mha", "y": tmp_path / "y.nii", "z": tmp_path / "z.nrrd"}
    (warning,) = caplog.records
    assert "2 case ID(s) given by more than one input" in warning.getMessage()
    assert "x: x.mha, x.nii.gz; y: y.nii, y_0000.nii.gz" in warning.getMessage()
    assert case_owners([]) == {}


def test_label_maps_beside_the_cts_are_told_by_their_header_and_left_out_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As datasets ship them: `x_0000.nii.gz` (the CT) beside `x.nii.gz` (its 8-bit label)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case_id in ("ts_example_ct_sm", "ts_example_ct"):
        case = shared_case(case_id)
        (inputs / f"{case_id}_0000.nii.gz").symlink_to(case.image)
        (inputs / f"{case_id}.nii.gz").symlink_to(case.label)
    sources = find_sources(inputs, tmp_path / "out")
    assert label_maps_among(sources) == [inputs / "ts_example_ct.nii.gz", inputs / "ts_example_ct_sm.nii.gz"]
    with caplog.at_level(logging.WARNING):
        cts = without_label_maps(sources, inputs)
    assert cts == [inputs / "ts_example_ct_0000.nii.gz", inputs / "ts_example_ct_sm_0000.nii.gz"]
    (warning,) = caplog.records
    assert "2 file(s) are label maps, not CTs, and are skipped: ts_example_ct.nii.gz, ts_example_ct_sm" in (
        warning.getMessage()
    )
    labels_only = [path for path in sources if path not in cts]  # the folders swapped: nothing to segment
    with pytest.raises(InputError, match=r"label maps only, no CT .*are the input and output folders swapped"):
        without_label_maps(labels_only, inputs)


def test_a_folder_of_cts_with_loose_dicom_files_is_a_folder_of_cts_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to be read as one DICOM series: the NIfTI CTs were skipped without a word."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a_0000.nii.gz").symlink_to(shared_case("ts_example_ct_sm").image)
    for slice_file in sorted(shared_case("ts_example_ct_dicom").image.iterdir())[:3]:
        (inputs / slice_file.name).symlink_to(slice_file)  # a loose series, or a stray file
    with caplog.at_level(logging.WARNING):
        sources = find_sources(inputs, tmp_path / "out")
    assert sources == [inputs / "a_0000.nii.gz"]
    assert "3 loose DICOM file(s) beside the CTs not read" in caplog.text
    series = tmp_path / "series"  # DICOM files alone: one series to read
    shutil.copytree(shared_case("ts_example_ct_dicom").image, series)
    assert find_sources(series, tmp_path / "out") == [series]


def test_a_dicom_folders_label_never_goes_beside_it_among_the_other_cts_and_the_refusal_says_so(
    tmp_path: Path,
) -> None:
    """The output is the series' parent, not inside it: the refusal says what is wrong with that (it used to call
    the parent the input folder)."""
    series = tmp_path / "series"
    shutil.copytree(shared_case("ts_example_ct_dicom").image, series)
    with pytest.raises(InputError) as refusal:
        find_sources(series, tmp_path)
    message = str(refusal.value)
    assert message.startswith(f"{tmp_path}: the output folder holds the input DICOM folder series: its label would")
    assert "among what a run on" in message and str(tmp_path / "labels") in message
    assert "inside" not in message and "is the input folder" not in message
    assert find_sources(series, tmp_path / "labels") == [series]
