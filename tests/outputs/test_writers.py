"""What `predict` writes for a case behind the CaseWriter interface: the label map in its format, the DICOM-SEG,
the RT Structure Set, the organ statistics and the preview PNG."""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.read import read_ct, read_label
from efficientscn.imaging.write import write_image_atomic
from efficientscn.labels import ORGAN_NAMES
from efficientscn.outputs.statistics import organ_statistics, read_statistics_json, write_statistics_json
from efficientscn.outputs.writers import (
    COMPANIONS,
    LABEL_FORMATS,
    STATISTICS_CSV,
    CaseOutput,
    CaseResult,
    CaseWriter,
    DicomSegWriter,
    DicomSeriesOutput,
    DoneCase,
    ImageLabelWriter,
    PreviewWriter,
    RTStructWriter,
    StatisticsWriter,
    case_output,
    companion_writers,
    leftovers_of,
    write_case,
)

from helpers import shared_case

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _result(ct: CanonicalCT, label_zyx: np.ndarray) -> CaseResult:
    return CaseResult(ct, label_zyx, ct.restore(label_zyx), shared_case("ts_example_ct_sm").image)


@pytest.fixture(scope="module")
def ct() -> CanonicalCT:
    """ts_example_ct_sm (RAS, so its canonical grid is flipped in x and y from the grid as read)."""
    return CanonicalCT.read(shared_case("ts_example_ct_sm").image)


@pytest.fixture(scope="module")
def result(ct: CanonicalCT) -> CaseResult:
    label = np.zeros(ct.array_zyx.shape, np.uint8)
    label[8:20, 20:60, 10:50] = 1
    label[12:18, 60:80, 70:100] = 3
    label[14, 40, 100] = 4
    return _result(ct, label)


def _read_back(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


WRITERS = [*(make() for make in LABEL_FORMATS.values()), *(make() for make in COMPANIONS.values())]
"""Every registered writer: each label format and each companion."""
CASE_OUTPUTS = [writer for writer in WRITERS if isinstance(writer, CaseOutput)]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: f"{type(w).__name__}-{w.path(Path('o'), 'c').name}")
def test_each_registered_writer_names_and_writes_its_own_output(writer: CaseWriter) -> None:
    for method in ("path", "write"):
        assert getattr(type(writer), method) is not getattr(CaseWriter, method), method
    assert writer.name and writer.path(Path("out"), "case", Path("case.nii.gz")).is_relative_to("out")


@pytest.mark.parametrize("writer", CASE_OUTPUTS, ids=lambda w: f"{type(w).__name__}-{w.path(Path('o'), 'c').name}")
def test_each_case_output_can_judge_an_existing_file(writer: CaseOutput) -> None:
    for method in ("existing_problem", "refuse_replacing"):
        assert getattr(type(writer), method) is not getattr(CaseOutput, method), method


def test_the_writers_have_distinct_report_names() -> None:
    assert set(COMPANIONS) == {"dicom-seg", "rtstruct", "statistics", "preview"}  # their flags: --dicom-seg, ...
    names = list({type(writer): writer.name for writer in WRITERS}.values())  # one per kind of output
    assert all(isinstance(name, str) and name for name in names)
    assert len(set(names)) == len(names)


def test_the_label_file_is_named_by_the_case_id_in_a_format_that_keeps_its_cts_grid(tmp_path: Path) -> None:
    writer = ImageLabelWriter()
    assert writer.path(tmp_path, "train_007") == tmp_path / "train_007.nii.gz"
    for source, suffix in [("x_0000.nii.gz", ".nii.gz"), ("x.nii", ".nii.gz"), ("x.MHA", ".mha"), ("x.mhd", ".mha")]:
        assert writer.path(tmp_path, "x", Path(source)) == tmp_path / f"x{suffix}"
    assert (
        writer.path(tmp_path, "x", Path("x.nhdr")) == writer.path(tmp_path, "x", Path("x.nrrd")) == tmp_path / "x.nrrd"
    )
    assert writer.path(tmp_path, "series", tmp_path / "series") == tmp_path / "series.nii.gz"  # a DICOM folder


def test_the_label_is_written_as_uint8_on_the_grid_of_the_ct_as_read(
    tmp_path: Path, ct: CanonicalCT, result: CaseResult
) -> None:
    writer = ImageLabelWriter()
    path = writer.path(tmp_path / "out", "case")
    writer.write(result, path, overwrite=False)
    written = _read_back(path)
    assert written.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(result.label))
    assert written.GetSize() == ct.image.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), ct.image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), ct.image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), ct.image.GetDirection(), atol=1e-6)
    # read back onto the canonical grid, it is the label the case was segmented into
    back = ct.reorientation.to_canonical_array(sitk.GetArrayFromImage(written))
    np.testing.assert_array_equal(back, result.label_zyx)
    assert [p.name for p in path.parent.iterdir()] == ["case.nii.gz"]  # no temporary file left


def test_an_existing_label_is_kept_without_overwrite_and_replaced_with_it(
    tmp_path: Path, ct: CanonicalCT, result: CaseResult
) -> None:
    writer = ImageLabelWriter()
    path = writer.path(tmp_path, "case")
    writer.write(_result(ct, np.zeros_like(result.label_zyx)), path, overwrite=False)
    with pytest.raises(FileExistsError, match=re.escape(str(path))):
        writer.write(result, path, overwrite=False)
    assert not sitk.GetArrayFromImage(_read_back(path)).any()
    writer.write(result, path, overwrite=True)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(_read_back(path)), sitk.GetArrayFromImage(result.label))
    assert [p.name for p in tmp_path.iterdir()] == ["case.nii.gz"]


def test_a_label_other_than_uint8_is_refused_and_nothing_written(tmp_path: Path, result: CaseResult) -> None:
    wide = CaseResult(result.ct, result.label_zyx, sitk.Cast(result.label, sitk.sitkInt16), result.source)
    path = tmp_path / "case.nii.gz"
    with pytest.raises(TypeError, match="uint8"):
        ImageLabelWriter().write(wide, path, overwrite=False)
    assert not list(tmp_path.iterdir())


def test_the_preview_goes_to_the_preview_folder_as_a_png(tmp_path: Path, result: CaseResult) -> None:
    writer = PreviewWriter()
    path = writer.path(tmp_path / "out", "train_007")
    assert path == tmp_path / "out" / "preview" / "train_007.png"
    writer.write(result, path, overwrite=False)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = _read_back(path)
    assert image.GetDimension() == 2 and image.GetNumberOfComponentsPerPixel() == 3
    assert [p.name for p in path.parent.iterdir()] == ["train_007.png"]


def test_the_preview_replaces_an_older_one_even_without_overwrite(tmp_path: Path, result: CaseResult) -> None:
    """The preview follows the label just written, so a stale one from an earlier run never survives."""
    writer = PreviewWriter()
    path = writer.path(tmp_path, "case")
    path.parent.mkdir()
    path.write_bytes(b"an older preview")
    writer.write(result, path, overwrite=False)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_the_format_asked_names_the_label_whatever_the_cts_format(tmp_path: Path) -> None:
    for label_format in ("nii.gz", "nii", "mha", "nrrd"):
        writer = case_output(label_format)
        assert writer.path(tmp_path, "x", Path("x.mha")) == tmp_path / f"x.{label_format}"
    assert isinstance(case_output("dicom-seg"), DicomSegWriter)
    assert case_output("dicom-seg").path(tmp_path, "series", tmp_path / "series") == tmp_path / "series.seg.dcm"
    assert isinstance(case_output("rtstruct"), RTStructWriter)
    assert case_output("rtstruct").path(tmp_path, "series", tmp_path / "series") == tmp_path / "series.rtstruct.dcm"
    assert set(LABEL_FORMATS) == {"nii.gz", "nii", "mha", "nrrd", "dicom-seg", "rtstruct"}


@pytest.mark.parametrize("label_format", ["nii", "mha", "nrrd"])
def test_a_label_in_another_format_reads_back_equal_on_the_cts_grid(
    tmp_path: Path, ct: CanonicalCT, result: CaseResult, label_format: str
) -> None:
    writer = case_output(label_format)
    path = writer.path(tmp_path, "case")
    writer.write(result, path, overwrite=False)
    written = _read_back(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(result.label))
    np.testing.assert_allclose(written.GetOrigin(), ct.image.GetOrigin(), atol=1e-4)
    assert writer.existing_problem(path, result.source) is None  # counts as done on a resumed run


def test_the_companions_follow_the_options_and_a_dicom_seg_is_never_written_twice() -> None:
    assert companion_writers((), case_output()) == []
    every = companion_writers(("preview", "dicom-seg", "statistics"), case_output())  # in the registry's order
    assert [type(writer) for writer in every] == [DicomSegWriter, StatisticsWriter, PreviewWriter]
    assert companion_writers(("dicom-seg",), case_output("dicom-seg")) == []  # the SEG is already the case's label
    with pytest.raises(ValueError, match=r"unknown output\(s\) \['png'\]"):
        companion_writers(("png",), case_output())


@pytest.mark.parametrize("writer", [DicomSegWriter(), RTStructWriter()], ids=lambda w: w.name)
def test_a_dicom_output_is_refused_for_a_file_and_allowed_for_a_dicom_folder(
    tmp_path: Path, writer: DicomSeriesOutput
) -> None:
    nifti = shared_case("ts_example_ct_sm").image
    refusal = writer.refusal(nifti)
    assert refusal is not None and refusal.startswith(f"{nifti}: not a DICOM series")
    assert writer.refusal(shared_case("ts_example_ct_dicom").image) is None
    assert writer.batch_refusal([nifti]) is not None and writer.batch_refusal([nifti, nifti.parent]) is None
    assert ImageLabelWriter().refusal(nifti) is None and StatisticsWriter().refusal(nifti) is None


def test_the_statistics_are_written_as_json_on_the_grid_as_read(tmp_path: Path, result: CaseResult) -> None:
    writer = StatisticsWriter()
    path = writer.path(tmp_path, "case")
    assert path == tmp_path / "case.json"
    writer.write(result, path, overwrite=False)
    statistics = read_statistics_json(path)
    label = sitk.GetArrayViewFromImage(result.label)
    for organ in statistics.values():
        assert organ.voxels == np.count_nonzero(label == organ.label)
    with pytest.raises(FileExistsError):
        writer.write(result, path, overwrite=False)


def test_organs_touching_the_scans_first_or_last_slice_are_the_cut_off_ones(ct: CanonicalCT) -> None:
    label = np.zeros(ct.array_zyx.shape, np.uint8)
    label[5:10, 20:40, 20:40] = 1  # inside
    label[0:4, 50:60, 50:60] = 3  # at one end of the scan
    label[-3:, 70:80, 70:80] = 4  # at the other
    result = _result(ct, label)
    assert sorted(result.cut_off_labels()) == [3, 4]


@pytest.fixture(scope="module")
def dicom_result() -> CaseResult:
    """The shared 3-slice DICOM series, with a liver block."""
    series = shared_case("dcmqi_ct3slice").image
    ct = CanonicalCT.read(series)
    label = np.zeros(ct.array_zyx.shape, np.uint8)
    label[:, 200:300, 150:250] = 1
    return CaseResult(ct, label, ct.restore(label), series)


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: f"{type(w).__name__}-{w.path(Path('o'), 'c').name}")
def test_the_temporary_file_an_interrupted_write_leaves_is_found_as_its_leftover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: CaseWriter, result: CaseResult, dicom_result: CaseResult
) -> None:
    """What a run killed mid-write leaves, the next run removes (`leftovers_of`, the rule every writer follows)."""
    import efficientscn.atomic

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(efficientscn.atomic, "_create", killed)
    monkeypatch.setattr(efficientscn.atomic.os, "replace", killed)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # the process died: no clean-up
    case = dicom_result if isinstance(writer, DicomSeriesOutput) else result
    path = writer.path(tmp_path, "case", case.source)
    with pytest.raises(KeyboardInterrupt):
        writer.write(case, path, overwrite=False)
    monkeypatch.undo()
    left = [entry for entry in path.parent.iterdir() if entry.is_file()]
    assert len(left) == 1 and not path.exists()
    assert leftovers_of(path) == left
    assert leftovers_of(path.with_name("other" + path.name.removeprefix("case"))) == []  # never another case's


def test_a_nifti_label_that_cannot_lie_on_its_metaimage_cts_grid_is_removed_and_refused(tmp_path: Path) -> None:
    """Far from the scanner's origin, NIfTI's float32 origin moves the label off the CT's grid (fidelity #48): such a
    label would be redone by every later run, so asking for it fails the case; the CT's own format keeps it."""
    image = sitk.ReadImage(str(shared_case("ts_example_ct_sm").image))
    image.SetOrigin((123456.78, -98765.43, 4321.09))
    source = tmp_path / "far.mha"
    sitk.WriteImage(image, str(source))
    ct = CanonicalCT.read(source)
    label = np.zeros(ct.array_zyx.shape, np.uint8)
    label[8:20, 20:60, 10:50] = 1
    result = CaseResult(ct, label, ct.restore(label), source)
    nifti = case_output("nii.gz")
    path = nifti.path(tmp_path / "out", "far", source)
    with pytest.raises(InputError, match=r"removed again: not on the CT's grid.*--format"):
        nifti.write(result, path, overwrite=False)
    assert not path.exists() and leftovers_of(path) == []
    own = case_output("mha")
    own.write(result, own.path(tmp_path / "out", "far", source), overwrite=False)
    assert own.existing_problem(own.path(tmp_path / "out", "far", source), source) is None


@pytest.mark.parametrize(
    ("writer", "kind"), [(DicomSegWriter(), "a DICOM-SEG"), (RTStructWriter(), "an RT Structure Set")], ids=str
)
def test_a_damaged_dicom_output_is_replaced_and_a_file_of_another_kind_is_not(
    tmp_path: Path, dicom_result: CaseResult, writer: DicomSeriesOutput, kind: str
) -> None:
    path = writer.path(tmp_path, "case")
    writer.write(dicom_result, path, overwrite=False)
    assert writer.existing_problem(path, dicom_result.source) is None
    whole = path.read_bytes()
    path.write_bytes(whole[:-300])  # cut short
    assert writer.existing_problem(path, dicom_result.source) is not None
    writer.refuse_replacing(path)  # not refused: the case is done again
    ct_instance = sorted(dicom_result.source.iterdir())[0]
    path.write_bytes(ct_instance.read_bytes())
    with pytest.raises(InputError, match=f"is not {kind}; not replaced"):
        writer.refuse_replacing(path)
    path.write_text("notes\n")
    with pytest.raises(InputError, match=f"is not {kind}; not replaced"):
        writer.refuse_replacing(path)


# --- statistics.csv, the batch's file -----------------------------------------------------------------------------


def _done_case(folder: Path, case_id: str, shared: str = "ts_example_ct_sm") -> DoneCase:
    """A done case in `folder`: its CT (a link to a shared one) and its label beside."""
    case = shared_case(shared)
    source = folder / "in" / f"{case_id}_0000.nii.gz"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.symlink_to(case.image)
    label = write_image_atomic(read_label(case.label), folder / f"{case_id}.nii.gz")  # any name: through a link
    return DoneCase(case_id, source, label)


def test_the_statistics_table_holds_every_done_case_and_a_damaged_or_missing_json_is_made_again(
    tmp_path: Path,
) -> None:
    writer = StatisticsWriter()
    kept, damaged, missing = (_done_case(tmp_path, name) for name in ("kept", "damaged", "missing"))
    expected = organ_statistics(read_ct(kept.source), read_label(kept.label))
    write_statistics_json(writer.path(tmp_path, "kept"), expected)
    writer.path(tmp_path, "damaged").write_text('{"liver": {"voxels": ')  # cut short by a full disk
    assert writer.finish(tmp_path, [kept, damaged, missing]) == [tmp_path / STATISTICS_CSV]
    rows = list(csv.DictReader((tmp_path / STATISTICS_CSV).open(encoding="utf-8")))
    assert [row["case"] for row in rows] == [case for case in ("kept", "damaged", "missing") for _ in ORGAN_NAMES]
    for name in ("damaged", "missing"):  # made again, equal to the kept one's (the same CT and label)
        assert read_statistics_json(writer.path(tmp_path, name)) == read_statistics_json(writer.path(tmp_path, "kept"))


def test_a_case_name_that_is_not_utf8_is_kept_as_its_bytes_in_the_statistics_table(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9")  # Latin-1, as from an older system: not UTF-8
    case = _done_case(tmp_path, name)
    StatisticsWriter().finish(tmp_path, [case])
    assert b"\ncaf\xe9,liver," in (tmp_path / STATISTICS_CSV).read_bytes()


def test_a_statistics_table_that_cannot_be_written_is_named_and_a_case_left_out_too(tmp_path: Path) -> None:
    writer = StatisticsWriter()
    case = _done_case(tmp_path, "case")
    (tmp_path / STATISTICS_CSV).mkdir()  # where the table goes
    with pytest.raises(InputError, match=rf"{re.escape(str(tmp_path / STATISTICS_CSV))}: not written"):
        writer.finish(tmp_path, [case])
    shutil.rmtree(tmp_path / STATISTICS_CSV)
    unreadable = DoneCase("lost", tmp_path / "in" / "lost_0000.nii.gz", tmp_path / "lost.nii.gz")  # nothing there
    with pytest.raises(InputError, match=r"statistics.csv: 1 done case\(s\) left out: lost_0000.nii.gz: "):
        writer.finish(tmp_path, [case, unreadable])
    assert len(list(csv.DictReader((tmp_path / STATISTICS_CSV).open()))) == len(ORGAN_NAMES)  # the others written


def test_the_cut_off_organs_the_preview_hatches_follow_the_anatomy_not_the_storage() -> None:
    """The same CT stored axially and sagittally (ts_example_ct_sm and its asl variant, whose head-foot axis runs
    along index y): the same organs are cut off by the scan, so the same are hatched."""
    hatched = {}
    for case_id in ("ts_example_ct_sm", "ts_example_ct_sm_asl"):
        case = shared_case(case_id)
        ct = CanonicalCT.read(case.image)
        label = sitk.ReadImage(str(case.label), sitk.sitkUInt8)
        hatched[case_id] = CaseResult(ct, ct.array_zyx.astype(np.uint8) * 0, label, case.image).cut_off_labels()
    assert hatched["ts_example_ct_sm"] == hatched["ts_example_ct_sm_asl"] == [1, 2, 3]  # liver, kidneys, spleen


def test_a_case_is_written_label_last_and_a_companion_never_replaces_a_file_it_could_not_have_written(
    tmp_path: Path, dicom_result: CaseResult, result: CaseResult
) -> None:
    """A DICOM-SEG beside the label replaces its own earlier file, not a foreign one at its path (a CT saved as
    `x.seg.dcm`, say); the label is not reached, so the case is not done."""
    writers = [DicomSegWriter(), StatisticsWriter(), ImageLabelWriter()]
    written = list(write_case(dicom_result, writers, tmp_path, "x", overwrite=False))
    assert [(item.name, item.path.name) for item in written] == [
        ("dicom-seg", "x.seg.dcm"),
        ("statistics", "x.json"),
        ("write", "x.nii.gz"),
    ]
    again = tmp_path / "again"
    again.mkdir()
    (again / "x.seg.dcm").write_bytes((tmp_path / "x.seg.dcm").read_bytes())  # an earlier attempt's SEG: replaced
    assert [item.name for item in write_case(dicom_result, writers, again, "x", overwrite=False)][-1] == "write"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.seg.dcm").write_bytes(b"a file of the user's")
    with pytest.raises(InputError, match=r"x\.seg\.dcm: exists and is not a DICOM-SEG; not replaced"):
        list(write_case(dicom_result, writers, foreign, "x", overwrite=False))
    assert (foreign / "x.seg.dcm").read_bytes() == b"a file of the user's"
    assert not (foreign / "x.nii.gz").exists()
    beside_a_file_ct = list(
        write_case(result, [DicomSegWriter(), ImageLabelWriter()], tmp_path / "f", "y", overwrite=False)
    )
    assert beside_a_file_ct[0].path is None and "not a DICOM series" in beside_a_file_ct[0].refusal  # left out
    assert beside_a_file_ct[1].path == tmp_path / "f" / "y.nii.gz"
