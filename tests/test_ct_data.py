"""The test data itself: the FLARE labels are their sources' organ classes, and the files made from others
(derived_data) equal the published copies, voxel for voxel and in their geometry, where such a copy is found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from derived_data import derivations, make_file

from helpers import CT_DATA, REPO_ROOT, SHARED_CASES, require_shared_data

PUBLISHED = (CT_DATA, REPO_ROOT.parent / "shared" / "data")
"""Where a published copy of a made file may be: the data folder (when EFFICIENTSCN_SHARED_DATA names a copy that
holds them), and the data folder this project's CI keeps beside the repository."""

TOTALSEGMENTATOR_V2 = {1: 3, 2: 2, 3: 2, 5: 1, 7: 4}
"""TotalSegmentator v2 ("total" task) class -> FLARE label: spleen, right kidney, left kidney, liver, pancreas."""
SOURCE_CLASSES = {
    "ts_example_ct_sm": TOTALSEGMENTATOR_V2,
    "ts_example_ct": TOTALSEGMENTATOR_V2,
    "ts_example_ct_dicom": TOTALSEGMENTATOR_V2,
    "dcmqi_ct3slice": {1: 1},  # dcmqi's liver mask
}


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


@pytest.mark.parametrize("case_id", sorted(SOURCE_CLASSES))
def test_each_flare_label_is_its_source_labels_organ_classes(case_id: str) -> None:
    root = require_shared_data()
    case = SHARED_CASES[case_id]
    flare = _read(root / case["flare_label"])
    # the source label may lie on the same voxels in another orientation: nearest neighbour only reorders them
    source = sitk.Resample(_read(root / case["original_label"]), flare, sitk.Transform(), sitk.sitkNearestNeighbor)
    classes = sitk.GetArrayViewFromImage(source)
    expected = np.zeros(classes.shape, np.uint8)
    for source_class, organ in SOURCE_CLASSES[case_id].items():
        expected[classes == source_class] = organ
    assert np.array_equal(sitk.GetArrayViewFromImage(flare), expected)
    assert expected.any()


@pytest.mark.parametrize("relative", sorted(derivations(SHARED_CASES)))
def test_each_made_file_equals_its_published_copy(relative: str, tmp_path: Path) -> None:
    root = require_shared_data()
    published = next((folder / relative for folder in PUBLISHED if (folder / relative).is_file()), None)
    if published is None:
        pytest.skip(f"no published copy of {relative} to compare with in {', '.join(map(str, PUBLISHED))}")
    made, expected = _read(make_file(relative, SHARED_CASES, root, tmp_path)), _read(published)
    assert made.GetPixelID() == expected.GetPixelID()
    assert made.GetSize() == expected.GetSize()
    assert made.GetSpacing() == expected.GetSpacing()
    assert made.GetOrigin() == expected.GetOrigin()
    assert made.GetDirection() == expected.GetDirection()
    assert np.array_equal(sitk.GetArrayViewFromImage(made), sitk.GetArrayViewFromImage(expected))
