"""Writing images atomically: never a partial file, never an unasked replacement, labels as uint8."""

from __future__ import annotations

import contextlib
import re
import resource
import signal
from collections.abc import Iterator
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
    with pytest.raises(OSError, match=r"case\.nii\.gz: not written .*: disk full"):
        write_image_atomic(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), path, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["case.nii.gz"]


def test_labels_are_written_compressed_uint8_only(tmp_path: Path) -> None:
    label = sitk.GetImageFromArray(np.zeros((40, 50, 60), np.uint8))
    path = write_label(label, tmp_path / "zeros.nii.gz")
    assert path.stat().st_size < 2000  # 120 kB of zeros, gzip-compressed
    with pytest.raises(TypeError, match="uint8"):
        write_label(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), tmp_path / "wrong.nii.gz")


@contextlib.contextmanager
def _file_size_limit(limit_bytes: int) -> Iterator[None]:
    """Files of this process stop growing at `limit_bytes`, as on a full disk: each write past it fails (EFBIG),
    which ITK's NIfTI writer does not report."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


@pytest.mark.parametrize("name", ["case.nii.gz", "case.nii", "case.mha", "case.nrrd"])
def test_a_write_that_fails_on_a_full_disk_leaves_nothing_and_says_so(tmp_path: Path, name: str) -> None:
    """Without the read-back, the NIfTI writer leaves a truncated label under its final name, which a resumed run
    would then skip as done."""
    noise = np.random.default_rng(0).integers(0, 5, (40, 60, 60), dtype=np.uint8)  # compresses to about 30 kB
    old = write_label(sitk.GetImageFromArray(np.ones((4, 5, 6), np.uint8)), tmp_path / "old" / name)
    full_disk = rf"{re.escape(name)}: not written \(is the disk full\?\)"
    with _file_size_limit(8000), pytest.raises(OSError, match=full_disk):
        write_image_atomic(sitk.GetImageFromArray(noise), tmp_path / name)
    assert list(tmp_path.iterdir()) == [tmp_path / "old"]  # no label, no temporary file
    with _file_size_limit(8000), pytest.raises(OSError, match="not written"):
        write_image_atomic(sitk.GetImageFromArray(noise), old, overwrite=True)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(old))).shape == (4, 5, 6)  # the old label, intact
    assert [path.name for path in old.parent.iterdir()] == [name]
    write_image_atomic(sitk.GetImageFromArray(noise), tmp_path / name)  # with room, the same write succeeds
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name))), noise)
