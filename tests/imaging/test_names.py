"""Image file names and FLARE case IDs."""

from __future__ import annotations

from pathlib import Path

from efficientscn.imaging.names import case_id, is_image_path


def test_case_id_strips_format_and_channel_tag() -> None:
    assert case_id("TrainingImg/train_000_0000.nii.gz") == "train_000"
    assert case_id("TrainingMask/train_000.nii.gz") == "train_000"
    assert case_id("scans/patient_0000.mha") == "patient"
    assert case_id("dicom/series_a") == "series_a"


def test_a_name_that_is_only_the_channel_tag_keeps_it_as_its_id() -> None:
    """`_0000.nii.gz` would otherwise have the empty ID, and its label the hidden name `.nii.gz`."""
    assert case_id("_0000.nii.gz") == "_0000"
    assert case_id("a_0000.nii.gz") == "a"


def test_links_with_an_image_ending_are_cases_even_when_they_lead_nowhere(tmp_path: Path) -> None:
    (tmp_path / "dangling.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    (tmp_path / "loop.nii.gz").symlink_to(tmp_path / "loop.nii.gz")
    (tmp_path / "notes.txt").symlink_to(tmp_path / "gone.txt")
    assert is_image_path(tmp_path / "dangling.nii.gz") and is_image_path(tmp_path / "loop.nii.gz")
    assert not is_image_path(tmp_path / "notes.txt")
