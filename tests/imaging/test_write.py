"""Writing images atomically: never a partial file, never an unasked replacement, labels as uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.write import write_image_atomic, write_label


def test_write_never_replaces_an_existing_file_unless_asked(tmp_path: Path) -> None:
    label = sitk.GetImageFromArray(np.ones((4, 5, 6), np.uint8))
    path = write_label(label, tmp_path / "case.nii.gz")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"case\.nii\.gz"):
        write_label(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), path)
    assert path.read_bytes() == before
    write_label(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), path, overwrite=True)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).max() == 0


def test_failed_write_leaves_the_old_file_and_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    path = write_label(sitk.GetImageFromArray(np.ones((4, 5, 6), np.uint8)), tmp_path / "case.nii.gz")
    before = path.read_bytes()

    def crash_half_way(image: sitk.Image, target: str, useCompression: bool) -> None:
        Path(target).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", crash_half_way)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image_atomic(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), path, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["case.nii.gz"]


def test_labels_are_written_compressed_uint8_only(tmp_path: Path) -> None:
    label = sitk.GetImageFromArray(np.zeros((40, 50, 60), np.uint8))
    path = write_label(label, tmp_path / "zeros.nii.gz")
    assert path.stat().st_size < 2000  # 120 kB of zeros, gzip-compressed
    with pytest.raises(TypeError, match="uint8"):
        write_label(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), tmp_path / "wrong.nii.gz")
