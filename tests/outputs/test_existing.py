"""Files already where a case's label goes: kept only when sound, replaced only when this tool could have written
them."""

from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.outputs.existing import existing_label_problem, refuse_replacing_foreign_file

from helpers import shared_case

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
