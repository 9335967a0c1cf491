"""Per-organ statistics of a segmented CT: every number checked against a value known by construction (hand-made
boxes, analytic ellipsoids, the shared cases' listed volumes and median HU), then the JSON and CSV files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.read import read_ct, read_label
from efficientscn.outputs.statistics import (
    CSV_COLUMNS,
    OrganStatistics,
    organ_statistics,
    read_statistics_json,
    statistics_json,
    write_statistics_csv,
    write_statistics_json,
)
from efficientscn.phantom import ORGANS, PhantomGrid, make_phantom

from helpers import image_from_array, shared_case

# The hand-made case: size xyz (10, 12, 8), spacing (0.5, 2, 3) mm, so a voxel is 3 mm^3; the direction permutes
# the axes: index x runs along world -y, index y along world -z, index z along world +x. A voxel (i, j, k) (xyz)
# therefore lies at world (10 + 3k, -20 - 0.5i, 30 - 2j) mm.
SPACING = (0.5, 2.0, 3.0)
ORIGIN = (10.0, -20.0, 30.0)
PERMUTING = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
SHAPE_ZYX = (8, 12, 10)


def _pair(ct_zyx: np.ndarray, label_zyx: np.ndarray, **geometry) -> tuple[sitk.Image, sitk.Image]:
    geometry = {"spacing": SPACING, "origin": ORIGIN, "direction": PERMUTING, **geometry}
    return image_from_array(ct_zyx.astype(np.int16), **geometry), image_from_array(
        label_zyx.astype(np.uint8), **geometry
    )


@pytest.fixture(scope="module")
def hand_made() -> dict[str, OrganStatistics]:
    ct = np.full(SHAPE_ZYX, -1000, np.int16)
    label = np.zeros(SHAPE_ZYX, np.uint8)
    # liver: k 2..5, j 1..5, i 1..5 = 100 voxels holding the HU 0..99 in shuffled order
    label[2:6, 1:6, 1:6] = 1
    ct[2:6, 1:6, 1:6] = np.random.default_rng(3).permutation(100).reshape(4, 5, 5)
    # kidney: two 2x2x2 blocks three slices apart (k 1..2 and k 6..7, the last slice), 30 HU
    label[1:3, 8:10, 7:9] = label[6:8, 8:10, 7:9] = 2
    ct[label == 2] = 30
    # spleen: two 2x2x2 blocks meeting at one corner only, (i 2, j 9, k 1) and (i 3, j 10, k 2); in slice 0
    label[0:2, 8:10, 1:3] = label[2:4, 10:12, 3:5] = 3
    ct[0:2, 8:10, 1:3], ct[2:4, 10:12, 3:5] = -10, 50
    # pancreas: absent
    return organ_statistics(*_pair(ct, label))


def test_every_organ_is_reported_in_label_order_with_its_label_value(hand_made: dict[str, OrganStatistics]) -> None:
    assert list(hand_made) == ["liver", "kidney", "spleen", "pancreas"]
    assert [(s.organ, s.label) for s in hand_made.values()] == [
        ("liver", 1),
        ("kidney", 2),
        ("spleen", 3),
        ("pancreas", 4),
    ]


def test_voxel_counts_and_volumes_from_the_spacing(hand_made: dict[str, OrganStatistics]) -> None:
    assert [hand_made[o].voxels for o in ("liver", "kidney", "spleen")] == [100, 16, 16]
    assert hand_made["liver"].volume_ml == pytest.approx(100 * 3 / 1000)  # 0.5 x 2 x 3 = 3 mm^3 per voxel
    assert hand_made["kidney"].volume_ml == pytest.approx(16 * 3 / 1000)


def test_hu_mean_median_and_linearly_interpolated_percentiles(hand_made: dict[str, OrganStatistics]) -> None:
    liver = hand_made["liver"]  # 0..99: position p/100 x 99 of the sorted values
    assert (liver.mean_hu, liver.median_hu) == pytest.approx((49.5, 49.5))
    assert (liver.percentile_5_hu, liver.percentile_95_hu) == pytest.approx((4.95, 94.05))
    kidney = hand_made["kidney"]
    assert (kidney.mean_hu, kidney.median_hu, kidney.percentile_5_hu, kidney.percentile_95_hu) == (30, 30, 30, 30)
    spleen = hand_made["spleen"]  # 8 x -10 and 8 x 50: the median halfway between the 8th and 9th values
    assert (spleen.mean_hu, spleen.median_hu) == pytest.approx((20.0, 20.0))
    assert (spleen.percentile_5_hu, spleen.percentile_95_hu) == pytest.approx((-10.0, 50.0))


def test_bounding_box_in_world_mm_on_an_axis_permuting_grid(hand_made: dict[str, OrganStatistics]) -> None:
    liver = hand_made["liver"]  # k 2..5 -> x 16..25; i 1..5 -> y -20.5..-22.5; j 1..5 -> z 28..20
    assert liver.bbox_min_mm == pytest.approx((16.0, -22.5, 20.0))
    assert liver.bbox_max_mm == pytest.approx((25.0, -20.5, 28.0))
    assert liver.bbox_extent_mm == pytest.approx((9.0, 2.0, 8.0))
    kidney = hand_made["kidney"]  # k 1..7 -> x 13..31; i 7..8 -> y -23.5..-24; j 8..9 -> z 14..12
    assert kidney.bbox_min_mm == pytest.approx((13.0, -24.0, 12.0))
    assert kidney.bbox_max_mm == pytest.approx((31.0, -23.5, 14.0))


def test_pieces_are_counted_with_26_connectivity(hand_made: dict[str, OrganStatistics]) -> None:
    assert hand_made["liver"].connected_components == 1
    assert hand_made["kidney"].connected_components == 2  # two blocks with slices between them
    assert hand_made["spleen"].connected_components == 1  # two blocks sharing a corner only


def test_organs_cut_by_the_first_or_last_slice_along_the_head_foot_axis_are_flagged_with_that_end(
    hand_made: dict[str, OrganStatistics],
) -> None:
    """The grid stores the head-foot axis along index y (j 0 superior, j 11 inferior), not along its slices (k):
    the kidney, in the last k slice, is not cut off; the spleen, in the last j slice with its full section, is."""
    assert (hand_made["liver"].touches_scan_end, hand_made["liver"].scan_ends_touched) == (False, ())
    assert (hand_made["kidney"].touches_scan_end, hand_made["kidney"].scan_ends_touched) == (False, ())
    assert (hand_made["spleen"].touches_scan_end, hand_made["spleen"].scan_ends_touched) == (True, ("last",))


def test_an_organ_spanning_the_head_foot_axis_touches_both_ends_and_one_spanning_the_slices_neither() -> None:
    label = np.zeros(SHAPE_ZYX, np.uint8)
    label[4, :, 4] = 4  # every j: head to foot
    label[:, 4, 6] = 3  # every k: the stored slice axis, world x (left-right)
    statistics = organ_statistics(*_pair(np.zeros(SHAPE_ZYX), label))
    assert statistics["pancreas"].scan_ends_touched == ("first", "last")
    assert statistics["pancreas"].bbox_extent_mm == pytest.approx((0.0, 0.0, 22.0))  # 12 rows of 2 mm along z
    assert statistics["spleen"].scan_ends_touched == ()
    assert statistics["spleen"].bbox_extent_mm == pytest.approx((21.0, 0.0, 0.0))  # 8 slices of 3 mm along x


@pytest.mark.parametrize(("tip_voxels", "cut"), [(1, False), (2, True)])
def test_an_organ_whose_tip_grazes_the_end_slice_is_not_cut_off(tip_voxels: int, cut: bool) -> None:
    """A liver with 16 voxels in its widest section: 1 in the end slice is its tip (under a tenth), 2 a cut."""
    label = np.zeros(SHAPE_ZYX, np.uint8)
    label[2:6, 4:10, 2:6] = 1  # sections of 4 x 4 = 16 voxels, rows j 4..9
    label[2, 10:12, 2] = 1  # a thin tail on to the last row, j 11
    if tip_voxels == 2:
        label[3, 11, 2] = 1
    liver = organ_statistics(*_pair(np.zeros(SHAPE_ZYX), label))["liver"]
    assert liver.scan_ends_touched == (("last",) if cut else ())


def test_an_absent_organ_has_zero_voxels_and_no_measurements(hand_made: dict[str, OrganStatistics]) -> None:
    assert hand_made["pancreas"] == OrganStatistics(
        organ="pancreas",
        label=4,
        voxels=0,
        volume_ml=0.0,
        mean_hu=None,
        median_hu=None,
        percentile_5_hu=None,
        percentile_95_hu=None,
        bbox_min_mm=None,
        bbox_max_mm=None,
        bbox_extent_mm=None,
        connected_components=0,
        scan_ends_touched=(),
    )
    assert not hand_made["pancreas"].touches_scan_end


def _rotation(degrees_z: float, degrees_x: float) -> tuple[float, ...]:
    c, s = math.cos(math.radians(degrees_z)), math.sin(math.radians(degrees_z))
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(math.radians(degrees_x)), math.sin(math.radians(degrees_x))
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return tuple(float(v) for v in (rz @ rx).ravel())


def test_the_box_on_an_oblique_grid_spans_the_corner_voxels_of_the_index_box_and_holds_every_voxel() -> None:
    label = np.zeros(SHAPE_ZYX, np.uint8)
    label[1:4, 2:5, 3:7] = 1  # an L: one corner voxel of its index box is not liver
    label[1, 2, 3] = 0
    label[6, 9, 8] = 3  # one voxel
    ct, label_image = _pair(np.zeros(SHAPE_ZYX), label, direction=_rotation(30.0, 20.0))
    statistics = organ_statistics(ct, label_image)

    def world(i: int, j: int, k: int) -> np.ndarray:
        return np.array(label_image.TransformIndexToPhysicalPoint((i, j, k)))

    corners = np.array([world(i, j, k) for i in (3, 6) for j in (2, 4) for k in (1, 3)])
    liver = statistics["liver"]
    assert liver.bbox_min_mm == pytest.approx(tuple(corners.min(axis=0)))
    assert liver.bbox_max_mm == pytest.approx(tuple(corners.max(axis=0)))
    centres = np.array([world(int(i), int(j), int(k)) for k, j, i in np.argwhere(label == 1)])
    assert np.all(centres >= np.array(liver.bbox_min_mm) - 1e-9)
    assert np.all(centres <= np.array(liver.bbox_max_mm) + 1e-9)
    spleen = statistics["spleen"]
    assert spleen.bbox_min_mm == pytest.approx(tuple(world(8, 9, 6)))
    assert spleen.bbox_max_mm == pytest.approx(tuple(world(8, 9, 6)))
    assert liver.volume_ml == pytest.approx((3 * 3 * 4 - 1) * 3 / 1000)


# ---- phantom ellipsoids ---------------------------------------------------------------------------------------------

ELLIPSOID_VOLUME_TOLERANCE = 0.01
"""Voxels of 2 to 2.5 mm count an ellipsoid of semi-axes 13 mm and more to within 1 % of 4/3 pi abc (0.05-0.4 %
for the ones here)."""


def _ellipsoid_ml(*organs) -> float:
    return sum(4.0 / 3.0 * math.pi * math.prod(o.semi_axes_mm) for o in organs) / 1000.0


def test_phantom_ellipsoid_volumes_hu_and_boxes_match_their_definition() -> None:
    right_kidney, left_kidney, pancreas = ORGANS[1], ORGANS[2], ORGANS[4]  # these three do not overlap
    grid = PhantomGrid(size=(160, 100, 80), spacing_mm=(2.0, 2.0, 2.5), centre_mm=(0.0, 40.0, -30.0))
    statistics = organ_statistics(*make_phantom(grid, organs=(right_kidney, left_kidney, pancreas), noise_hu=10.0))
    kidney = statistics["kidney"]
    assert kidney.volume_ml == pytest.approx(_ellipsoid_ml(right_kidney, left_kidney), rel=ELLIPSOID_VOLUME_TOLERANCE)
    assert statistics["pancreas"].volume_ml == pytest.approx(_ellipsoid_ml(pancreas), rel=ELLIPSOID_VOLUME_TOLERANCE)
    assert (kidney.connected_components, statistics["pancreas"].connected_components) == (2, 1)
    assert statistics["liver"].voxels == statistics["spleen"].voxels == 0
    # rounded Gaussian noise of 10 HU: the 5th and 95th percentiles lie 16.45 HU either side of the organ's HU
    assert kidney.median_hu == pytest.approx(right_kidney.hu, abs=1.0)
    assert kidney.percentile_5_hu == pytest.approx(right_kidney.hu - 16.45, abs=1.0)
    assert kidney.percentile_95_hu == pytest.approx(right_kidney.hu + 16.45, abs=1.0)
    # the box around both kidneys: voxel centres lie inside the ellipsoids, within a voxel of their extremes
    low = np.array([-98.0, 30.0, -85.0])  # x -70 - 28, y 55 - 25, z -35 - 50
    high = np.array([98.0, 80.0, 25.0])  # x 70 + 28, y 55 + 25, z -25 + 50
    spacing = np.array(grid.spacing_mm)
    assert np.all((np.array(kidney.bbox_min_mm) >= low) & (np.array(kidney.bbox_min_mm) <= low + spacing))
    assert np.all((np.array(kidney.bbox_max_mm) <= high) & (np.array(kidney.bbox_max_mm) >= high - spacing))
    assert kidney.scan_ends_touched == ()


def test_phantom_ellipsoid_volumes_on_an_oblique_grid() -> None:
    right_kidney, spleen = ORGANS[1], ORGANS[3]  # apart (the liver overlaps the right kidney)
    grid = PhantomGrid(
        size=(120, 100, 90), spacing_mm=(2.5, 2.5, 2.5), direction=_rotation(25.0, 15.0), centre_mm=(0.0, 30.0, 0.0)
    )
    statistics = organ_statistics(*make_phantom(grid, organs=(right_kidney, spleen), noise_hu=0.0))
    for organ, name in ((right_kidney, "kidney"), (spleen, "spleen")):
        assert statistics[name].volume_ml == pytest.approx(_ellipsoid_ml(organ), rel=ELLIPSOID_VOLUME_TOLERANCE), name
        assert statistics[name].median_hu == organ.hu
        assert statistics[name].connected_components == 1


# ---- the shared real CTs --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> dict[str, dict[str, OrganStatistics]]:
    """ts_example_ct_sm and its re-gridded variants: z reversed (lpi), axes permuted (asl), oblique, thick slices."""
    found = {}
    for suffix in ("", "_lpi", "_asl", "_oblique", "_aniso"):
        case = shared_case(f"ts_example_ct_sm{suffix}")
        found[case.id] = organ_statistics(read_ct(case.image), read_label(case.label))
    return found


def test_real_counts_and_volumes_equal_those_listed_in_cases_json(real: dict[str, dict[str, OrganStatistics]]) -> None:
    for case_id, statistics in real.items():
        for organ, listed in shared_case(case_id).meta["organs"].items():
            assert statistics[organ].voxels == listed["voxels"], (case_id, organ)
            assert statistics[organ].volume_ml == pytest.approx(listed["ml"], abs=0.05), (case_id, organ)


def test_real_median_hu_match_the_readme_alignment_check(real: dict[str, dict[str, OrganStatistics]]) -> None:
    for case_id in ("ts_example_ct_sm", "ts_example_ct_sm_lpi", "ts_example_ct_sm_asl"):  # the same voxels
        statistics = real[case_id]
        for organ, median in (("liver", 46), ("kidney", 14), ("spleen", 35)):
            assert statistics[organ].median_hu == pytest.approx(median, abs=0.5), (case_id, organ)


def test_real_boxes_are_the_same_in_world_space_however_the_grid_is_ordered(
    real: dict[str, dict[str, OrganStatistics]],
) -> None:
    original, reversed_z, permuted = (real[f"ts_example_ct_sm{s}"] for s in ("", "_lpi", "_asl"))
    for organ, statistics in original.items():
        for other in (reversed_z[organ], permuted[organ]):
            assert other.bbox_min_mm == pytest.approx(statistics.bbox_min_mm, abs=1e-3), organ
            assert other.bbox_max_mm == pytest.approx(statistics.bbox_max_mm, abs=1e-3), organ
            assert other.connected_components == statistics.connected_components, organ
        # reversing the slices swaps the first and the last slice; storing the CT sagittally (its head-foot axis
        # along index y, running the same way) keeps them
        swapped = {"first": "last", "last": "first"}
        assert sorted(swapped[end] for end in statistics.scan_ends_touched) == sorted(
            reversed_z[organ].scan_ends_touched
        ), organ
        assert permuted[organ].scan_ends_touched == statistics.scan_ends_touched, organ
    # the liver is cut at both ends, the kidneys at the lower; the spleen's lower tip lies in the first slice
    assert {organ: s.scan_ends_touched for organ, s in original.items()} == {
        "liver": ("first", "last"),
        "kidney": ("first",),
        "spleen": ("last",),
        "pancreas": (),
    }


# ---- refusals and files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"spacing": (0.5, 2.0, 3.5)}, "spacing"),
        ({"origin": (10.0, -20.0, 31.0)}, "origin"),
        ({"direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}, "direction"),
    ],
)
def test_a_label_off_the_ct_grid_is_refused(change: dict, reason: str) -> None:
    ct, _ = _pair(np.zeros(SHAPE_ZYX), np.zeros(SHAPE_ZYX))
    _, label = _pair(np.zeros(SHAPE_ZYX), np.zeros(SHAPE_ZYX), **change)
    with pytest.raises(ValueError, match=reason):
        organ_statistics(ct, label)


def test_a_label_of_another_size_or_pixel_type_is_refused() -> None:
    ct, label = _pair(np.zeros(SHAPE_ZYX), np.zeros(SHAPE_ZYX))
    _, smaller = _pair(np.zeros((7, 12, 10)), np.zeros((7, 12, 10)))
    with pytest.raises(ValueError, match="size"):
        organ_statistics(ct, smaller)
    with pytest.raises(ValueError, match="label: pixel type"):
        organ_statistics(ct, sitk.Cast(label, sitk.sitkInt16))
    with pytest.raises(ValueError, match="CT: pixel type"):
        organ_statistics(label, label)  # swapped arguments


def test_json_holds_rounded_plain_numbers_and_reads_back_equal(
    hand_made: dict[str, OrganStatistics], tmp_path: Path
) -> None:
    path = tmp_path / "case_001.json"
    write_statistics_json(path, hand_made)
    back = read_statistics_json(path)
    assert back == {organ: s.rounded() for organ, s in hand_made.items()}
    assert back["liver"].percentile_5_hu in (4.9, 5.0)  # 4.95 to 0.1 HU
    assert back["liver"].bbox_min_mm == (16.0, -22.5, 20.0)
    assert statistics_json(back) == path.read_text(encoding="utf-8")  # reading loses nothing the file holds
    assert '"pancreas": {' in path.read_text() and '"mean_hu": null' in path.read_text()


def test_an_existing_json_is_kept_unless_overwrite(hand_made: dict[str, OrganStatistics], tmp_path: Path) -> None:
    path = tmp_path / "case_001.json"
    path.write_text("earlier\n")
    with pytest.raises(FileExistsError):
        write_statistics_json(path, hand_made)
    assert path.read_text() == "earlier\n"
    write_statistics_json(path, hand_made, overwrite=True)
    assert read_statistics_json(path)["kidney"].voxels == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_001.json"]  # no temporary left behind


def test_a_file_that_is_not_statistics_is_refused_naming_it(tmp_path: Path) -> None:
    for text in ("not json", '{"liver": {"voxels": 3}}', '{"liver": 3}'):
        path = tmp_path / "bad.json"
        path.write_text(text)
        with pytest.raises(InputError, match=r"bad\.json"):
            read_statistics_json(path)


def test_csv_has_the_header_and_one_row_per_case_and_organ_and_is_replaced_each_run(
    hand_made: dict[str, OrganStatistics], tmp_path: Path
) -> None:
    path = tmp_path / "statistics.csv"
    write_statistics_csv(path, {"old": hand_made})
    write_statistics_csv(path, {"a,1": hand_made, "b": hand_made})
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert CSV_COLUMNS[:2] == ("case", "organ") and "bbox_min_x_mm" in CSV_COLUMNS and "bbox_max_z_mm" in CSV_COLUMNS
    assert [(r["case"], r["organ"]) for r in rows] == [
        (case, organ) for case in ("a,1", "b") for organ in ("liver", "kidney", "spleen", "pancreas")
    ]
    liver, kidney, spleen, pancreas = rows[:4]
    assert (liver["voxels"], float(liver["volume_ml"]), float(liver["median_hu"])) == ("100", 0.3, 49.5)
    assert [float(liver[f"bbox_min_{a}_mm"]) for a in "xyz"] == [16.0, -22.5, 20.0]
    assert [float(liver[f"bbox_max_{a}_mm"]) for a in "xyz"] == [25.0, -20.5, 28.0]
    assert (kidney["connected_components"], kidney["touches_scan_end"], kidney["scan_ends_touched"]) == (
        "2",
        "false",
        "",
    )
    assert (spleen["touches_scan_end"], spleen["scan_ends_touched"]) == ("true", "last")
    assert (pancreas["voxels"], pancreas["mean_hu"], pancreas["bbox_min_x_mm"]) == ("0", "", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["statistics.csv"]
