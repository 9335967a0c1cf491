"""Image file names and FLARE case IDs."""

from __future__ import annotations

from efficientscn.imaging.names import case_id


def test_case_id_strips_format_and_channel_tag() -> None:
    assert case_id("TrainingImg/train_000_0000.nii.gz") == "train_000"
    assert case_id("TrainingMask/train_000.nii.gz") == "train_000"
    assert case_id("scans/patient_0000.mha") == "patient"
    assert case_id("dicom/series_a") == "series_a"
