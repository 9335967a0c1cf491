"""What `predict` writes for a case: the label map file and the preview PNG, behind the LabelWriter interface."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.infer.writers import CaseResult, ImageLabelWriter, LabelWriter, PreviewWriter

from helpers import shared_case

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _result(ct: CanonicalCT, label_zyx: np.ndarray) -> CaseResult:
    return CaseResult(ct, label_zyx, ct.restore(label_zyx))


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


WRITERS = [ImageLabelWriter(), PreviewWriter()]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: type(w).__name__)
def test_each_writer_has_the_label_writer_interface(writer: LabelWriter) -> None:
    for name in ("path", "write"):
        method = getattr(writer, name)
        assert callable(method)
        expected = inspect.signature(getattr(LabelWriter, name))
        assert inspect.signature(method).parameters == dict(list(expected.parameters.items())[1:])  # without self
    for name in getattr(LabelWriter, "__annotations__", {}):  # the protocol's data members
        assert hasattr(writer, name), name


def test_the_writers_have_distinct_report_names() -> None:
    names = [writer.name for writer in WRITERS]
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
    wide = CaseResult(result.ct, result.label_zyx, sitk.Cast(result.label, sitk.sitkInt16))
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
