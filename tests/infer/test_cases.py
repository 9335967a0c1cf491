"""The cases of a `predict` run: what an input names, which case owns a label name, reading the CTs ahead."""

from __future__ import annotations

import logging
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.atomic import atomic_output, leftover_temporaries
from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.infer import cases as cases_module
from efficientscn.infer.cases import (
    Case,
    ReadAhead,
    case_lock,
    existing_label_problem,
    find_sources,
    label_owners,
    refuse_replacing_foreign_file,
)

from helpers import shared_case


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _drain(executor: ThreadPoolExecutor) -> None:
    """Wait until every job submitted so far has run (one worker runs the jobs in submission order)."""
    executor.submit(lambda: None).result()


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
    with caplog.at_level(logging.WARNING, logger="efficientscn.infer.cases"):
        assert find_sources(inputs, tmp_path / "out") == [inputs / "a_0000.nii.gz"]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(inputs) in warnings[0] and "2 file(s)" in warnings[0]
    assert "notes.txt" in warnings[0] and "README" in warnings[0]
    assert ".DS_Store" not in warnings[0] and ".b_0000" not in warnings[0] and ".cache" not in warnings[0]


def test_a_folder_of_only_images_logs_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _touch(tmp_path / "in", "a_0000.nii.gz")
    with caplog.at_level(logging.WARNING, logger="efficientscn.infer.cases"):
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


# --- label_owners -------------------------------------------------------------------------------------------------


def test_the_first_case_of_each_label_name_owns_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cases = [
        Case(tmp_path / "x_0000.nii.gz", out / "x.nii.gz"),
        Case(tmp_path / "y.mha", out / "y.nii.gz"),
        Case(tmp_path / "x.nii.gz", out / "x.nii.gz"),  # the same label name as the first case
        Case(tmp_path / "y.nrrd", out / "y.nii.gz"),
    ]
    assert label_owners(cases) == {out / "x.nii.gz": tmp_path / "x_0000.nii.gz", out / "y.nii.gz": tmp_path / "y.mha"}
    assert label_owners([]) == {}


# --- ReadAhead ----------------------------------------------------------------------------------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths CanonicalCT.read is called with, in order, from any thread."""
    paths: list[Path] = []
    read = CanonicalCT.read

    def recording_read(cls: type[CanonicalCT], path: str | os.PathLike[str], **kwargs: int | None) -> CanonicalCT:
        paths.append(Path(path))
        return read(path, **kwargs)

    monkeypatch.setattr(CanonicalCT, "read", classmethod(recording_read))
    return paths


def _shared_cases(tmp_path: Path, *ids: str) -> list[Case]:
    sources = [shared_case(case_id).image for case_id in ids]
    return [Case(source, tmp_path / "out" / f"{case_id}.nii.gz") for case_id, source in zip(ids, sources, strict=True)]


def test_read_ahead_reads_each_case_once_in_order_and_one_ahead(tmp_path: Path, reads: list[Path]) -> None:
    cases = _shared_cases(tmp_path, "ts_example_ct_sm", "ts_example_ct_sm_aniso", "ts_example_ct_sm_lpi")
    shapes = [(30, 101, 122), (12, 101, 122), (30, 101, 122)]  # zyx on the canonical grid
    sources = [case.source for case in cases]
    with ThreadPoolExecutor(1) as executor:
        ahead = ReadAhead(cases, executor, max_voxels=10**9)
        _drain(executor)
        assert reads == sources[:1]  # the first case is read before it is asked for
        for index, (case, shape) in enumerate(zip(cases, shapes, strict=True)):
            ct, seconds = ahead.take(case)
            assert isinstance(ct, CanonicalCT)
            assert ct.array_zyx.shape == shape
            assert ct.array_zyx.dtype == np.int16
            assert isinstance(seconds, float) and seconds >= 0.0
            _drain(executor)
            assert reads == sources[: index + 2]  # the next one is being read, not more
    assert reads == sources


def test_a_next_ct_too_large_to_read_ahead_is_read_when_its_turn_comes(
    tmp_path: Path, reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a case is segmented, only a small next CT is read (a batch then needs little more memory than its
    largest case); a larger one waits for its turn, and comes all the same."""
    # ts_example_ct: 1,380,064 voxels; ts_example_ct_sm_lpi: 369,660; the anisotropic one: 147,864
    monkeypatch.setattr(cases_module, "READ_AHEAD_MAX_VOXELS", 400_000)
    cases = _shared_cases(tmp_path, "ts_example_ct_sm_aniso", "ts_example_ct", "ts_example_ct_sm_lpi")
    sources = [case.source for case in cases]
    with ThreadPoolExecutor(1) as executor:
        ahead = ReadAhead(cases, executor, max_voxels=10**9)
        assert ahead.take(cases[0])[0].array_zyx.shape == (12, 101, 122)
        _drain(executor)
        assert reads == sources[:1]  # the large second CT is not read ahead
        assert ahead.take(cases[1])[0].array_zyx.shape == (112, 101, 122)  # read now
        _drain(executor)
        assert reads == sources  # and the small third one ahead of its turn
        assert ahead.take(cases[2])[0].array_zyx.shape == (30, 101, 122)
    assert reads == sources


def test_read_ahead_gives_the_ct_as_read_directly(tmp_path: Path) -> None:
    (case,) = _shared_cases(tmp_path, "ts_example_ct_sm_lpi")
    with ThreadPoolExecutor(1) as executor:
        ct, _ = ReadAhead([case], executor, max_voxels=10**9).take(case)
    direct = CanonicalCT.read(case.source)
    np.testing.assert_array_equal(ct.array_zyx, direct.array_zyx)
    assert ct.spacing_zyx == direct.spacing_zyx


def test_a_ct_over_max_voxels_is_refused_when_taken_and_the_next_case_still_comes(
    tmp_path: Path, reads: list[Path]
) -> None:
    # ts_example_ct_sm has 122 x 101 x 30 = 369,660 voxels, the anisotropic one 122 x 101 x 12 = 147,864
    large, small = _shared_cases(tmp_path, "ts_example_ct_sm", "ts_example_ct_sm_aniso")
    with ThreadPoolExecutor(1) as executor:
        ahead = ReadAhead([large, small], executor, max_voxels=200_000)  # the refusal waits for `take`
        with pytest.raises(InputError, match="CT too large: 369,660 voxels"):
            ahead.take(large)
        _drain(executor)
        assert reads == [large.source, small.source]  # the next one is read ahead all the same
        ct, _ = ahead.take(small)
    assert ct.array_zyx.shape == (12, 101, 122)


# --- labels already in the output folder ----------------------------------------------------------------------------


def _label_on(ct: sitk.Image, path: Path, value: int = 1) -> Path:
    label = sitk.Image(ct.GetSize(), sitk.sitkUInt8) + value
    label.CopyInformation(ct)
    sitk.WriteImage(label, str(path))
    return path


def test_an_existing_label_is_kept_only_if_it_reads_whole_is_uint8_and_lies_on_the_cts_grid(tmp_path: Path) -> None:
    ct_path = shared_case("ts_example_ct_sm").image
    ct = sitk.ReadImage(str(ct_path))
    assert existing_label_problem(_label_on(ct, tmp_path / "good.nii.gz"), ct_path) is None
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    assert existing_label_problem(tmp_path / "empty.nii.gz", ct_path) == "truncated NIfTI file (0 header bytes)"
    whole = _label_on(ct, tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    assert "truncated" in existing_label_problem(tmp_path / "cut.nii.gz", ct_path)
    moved = sitk.Image(ct)
    moved.SetOrigin([o + 5 for o in ct.GetOrigin()])
    assert "not on the CT's grid: origin" in existing_label_problem(
        _label_on(moved, tmp_path / "moved.nii.gz"), ct_path
    )
    sitk.WriteImage(ct, str(tmp_path / "a_ct.nii.gz"))
    assert existing_label_problem(tmp_path / "a_ct.nii.gz", ct_path) == "16-bit signed integer, where labels are uint8"
    dicom = shared_case("ts_example_ct_dicom").image  # a DICOM folder: its size is compared
    dicom_ct = sitk.Image([512, 512, 20], sitk.sitkUInt8)
    assert existing_label_problem(_label_on(dicom_ct, tmp_path / "dicom.nii.gz"), dicom) is None
    short = sitk.Image([512, 512, 19], sitk.sitkUInt8)
    assert "size (512, 512, 19), the CT's is (512, 512, 20)" in existing_label_problem(
        _label_on(short, tmp_path / "short.nii.gz"), dicom
    )


def test_only_an_empty_file_or_a_uint8_image_may_be_replaced_by_a_label(tmp_path: Path) -> None:
    ct = sitk.ReadImage(str(shared_case("ts_example_ct_sm").image))
    refuse_replacing_foreign_file(tmp_path / "absent.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    refuse_replacing_foreign_file(tmp_path / "empty.nii.gz")
    refuse_replacing_foreign_file(_label_on(ct, tmp_path / "label.nii.gz"))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    with pytest.raises(InputError, match=r"ct\.nii\.gz: exists and holds 16-bit signed integer voxels, not a label"):
        refuse_replacing_foreign_file(tmp_path / "ct.nii.gz")
    (tmp_path / "text.nii.gz").write_bytes(b"notes")
    with pytest.raises(InputError, match=r"text\.nii\.gz: exists and cannot be told to be a label"):
        refuse_replacing_foreign_file(tmp_path / "text.nii.gz")


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


def test_a_dicom_folders_label_never_goes_beside_it_among_the_other_cts(tmp_path: Path) -> None:
    series = tmp_path / "series"
    shutil.copytree(shared_case("ts_example_ct_dicom").image, series)
    with pytest.raises(InputError, match=r"the output folder is .*the input folder"):
        find_sources(series, tmp_path)
    assert find_sources(series, tmp_path / "labels") == [series]


# --- the per-case lock --------------------------------------------------------------------------------------------


def test_a_case_is_held_by_one_holder_at_a_time_and_free_again_after(tmp_path: Path) -> None:
    label = tmp_path / "case.nii.gz"
    with case_lock(label) as first:
        assert first and (tmp_path / ".case.nii.gz.lock").exists()
        with case_lock(label) as second:  # another run's attempt (flock locks are per open file)
            assert not second
    assert not (tmp_path / ".case.nii.gz.lock").exists()
    with case_lock(label) as again:
        assert again
    (tmp_path / ".case.nii.gz.lock").write_text("")  # left by a run killed while holding it: not locked any more
    with case_lock(label) as after_a_kill:
        assert after_a_kill


def test_leftover_temporaries_are_the_writers_own_and_no_other_cases(tmp_path: Path) -> None:
    ours = tmp_path / ".case.0123456789ab.partial.nii.gz"
    others = [tmp_path / ".case2.0123456789ab.partial.nii.gz", tmp_path / ".case.nii.gz.lock", tmp_path / "case.nii.gz"]
    for path in (ours, *others):
        path.write_text("")
    assert leftover_temporaries(tmp_path / "case.nii.gz", ".nii.gz") == [ours]
    long_a, long_b = tmp_path / ("x" * 240 + "a.nii.gz"), tmp_path / ("x" * 240 + "b.nii.gz")
    with atomic_output(long_a, suffix=".nii.gz") as temporary:  # two long names cut to the same prefix
        temporary.write_text("")
        assert leftover_temporaries(long_a, ".nii.gz") == [temporary]
        assert leftover_temporaries(long_b, ".nii.gz") == []  # never taken for the other's
