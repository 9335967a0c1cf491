"""Per-organ statistics of a segmented CT: volume, HU distribution, world bounding box, pieces, cut-off scan ends.

What users of TotalSegmentator's `--statistics` and of nnU-Net expect beside a label map, computed on the CT's own
grid as read (any direction, oblique included). One `<case>.json` per case, one `statistics.csv` per batch; a
resumed batch reads the earlier cases' JSON back to write its CSV.

Memory stays near the organs: nothing the size of the CT is built (no copy, no float version). SimpleITK finds
each organ's voxel count and index bounding box on the whole label; the CT and the label are then cut to that box,
where the organ's mask and its HU values are taken.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from efficientscn.atomic import atomic_output, write_text_atomic
from efficientscn.errors import InputError
from efficientscn.imaging.geometry import Grid, grid_of, physical_box
from efficientscn.labels import ORGAN_NAMES

ScanEnd = Literal["first", "last"]
"""An end of the scan along the patient's head-foot axis: its first slice (index 0 along the index axis nearest that
axis, on the grid as read) or its last."""

CUT_OFF_SECTION_SHARE = 0.1
"""An organ counts as cut off at a scan end when its section in the end slice is at least this share of its largest
section: less is its tip, which the end slice merely grazes (what lies beyond is a sliver). On the shared CTs a
liver cut 15 % of its height above its lower tip has 15 % there, an organ cut mid-way 76-100 %; the demonstration
models' liver runs on 3-5 slices below the reference's lower tip with a section of 6-10 %."""

ML_DECIMALS, HU_DECIMALS, MM_DECIMALS = 3, 1, 2
"""Decimals kept in the JSON and CSV files (0.001 ml, 0.1 HU, 0.01 mm): far below what a CT resolves."""

XYZ = ("x", "y", "z")
CSV_COLUMNS: tuple[str, ...] = (
    "case",
    "organ",
    "label",
    "voxels",
    "volume_ml",
    "mean_hu",
    "median_hu",
    "percentile_5_hu",
    "percentile_95_hu",
    *(f"bbox_{end}_{axis}_mm" for end in ("min", "max", "extent") for axis in XYZ),
    "connected_components",
    "touches_scan_end",
    "scan_ends_touched",
)
"""The header of `statistics.csv`: one row per case and organ."""
SCAN_ENDS_SEPARATOR = "+"
"""Joins the ends an organ touches in a CSV cell: "first", "last", "first+last", or empty."""


@dataclass(frozen=True)
class OrganStatistics:
    """One organ of a segmented CT, at full precision (`rounded` gives what the files hold).

    An organ with no voxel has `voxels` 0, `volume_ml` 0.0, `connected_components` 0, no scan end, and None for
    everything measured on its voxels (HU and bounding box).
    """

    organ: str
    """Its name in the FLARE convention (`labels.ORGAN_NAMES`): liver, kidney (left + right), spleen, pancreas."""
    label: int
    """Its label value, 1..4."""
    voxels: int
    volume_ml: float
    """voxels x the voxel volume of the grid's spacing."""
    mean_hu: float | None
    median_hu: float | None
    percentile_5_hu: float | None
    percentile_95_hu: float | None
    """Percentiles of the HU inside the organ by `np.percentile`'s default linear interpolation: the p-th lies at
    position p/100 x (n - 1) of the n sorted values, interpolated between its two neighbours."""
    bbox_min_mm: tuple[float, float, float] | None
    bbox_max_mm: tuple[float, float, float] | None
    """World box, xyz in mm (ITK physical, LPS), around the centres of the 8 corner voxels of the organ's index
    bounding box. On a grid whose axes follow the patient axes (any permutation or flip) that is exactly the min
    and max over the organ's voxel centres; on an oblique grid it encloses every organ voxel centre and can be
    larger, as a corner voxel of the index box need not be an organ voxel (the box of
    `geometry.physical_bounding_box`, which the original's landmark_bb.csv holds)."""
    bbox_extent_mm: tuple[float, float, float] | None
    """bbox_max_mm - bbox_min_mm: centre to centre, so a single voxel has extent 0."""
    connected_components: int
    """Pieces under 26-connectivity (voxels sharing a face, an edge or a corner belong together)."""
    scan_ends_touched: tuple[ScanEnd, ...]
    """The scan ends where the organ is cut off: along the patient's head-foot axis (`head_foot_axis`, whatever the
    axis the image is stored along), its section in the first or last slice is at least `CUT_OFF_SECTION_SHARE` of
    its largest. It likely goes on beyond the scan, and its volume is a lower bound."""

    @property
    def touches_scan_end(self) -> bool:
        """Whether the organ is cut off by the scan's first or last slice along the head-foot axis."""
        return bool(self.scan_ends_touched)

    def rounded(self) -> OrganStatistics:
        """A copy rounded as the files hold it: ml to 0.001, HU to 0.1, mm to 0.01."""
        return replace(
            self,
            volume_ml=_round(self.volume_ml, ML_DECIMALS),
            mean_hu=_round(self.mean_hu, HU_DECIMALS),
            median_hu=_round(self.median_hu, HU_DECIMALS),
            percentile_5_hu=_round(self.percentile_5_hu, HU_DECIMALS),
            percentile_95_hu=_round(self.percentile_95_hu, HU_DECIMALS),
            bbox_min_mm=_round_xyz(self.bbox_min_mm),
            bbox_max_mm=_round_xyz(self.bbox_max_mm),
            bbox_extent_mm=_round_xyz(self.bbox_extent_mm),
        )


def organ_statistics(ct: sitk.Image, label: sitk.Image) -> dict[str, OrganStatistics]:
    """The statistics of every organ of `label` over `ct`, keyed by organ name in label order (absent organs too).

    ct: 3-D int16 HU image on its grid as read (`read_ct`); label: uint8 FLARE label map (`read_label`) on the very
    same grid. Raises ValueError for other pixel types or when size, spacing, origin or direction differ (beyond
    `Grid.differences`' tolerance for header rounding). Label values other than 1..4 are ignored.
    """
    grid = _require_same_grid(ct, label)
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.ComputePerimeterOff()
    shape.ComputeFeretDiameterOff()
    shape.ComputeOrientedBoundingBoxOff()
    shape.Execute(label)
    present = set(shape.GetLabels())
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    statistics = {}
    for value, name in ORGAN_NAMES.items():
        if value not in present:
            statistics[name] = OrganStatistics(name, value, 0, 0.0, None, None, None, None, None, None, None, 0, ())
            continue
        box = shape.GetBoundingBox(value)  # index xyz, then size xyz
        start_xyz, end_xyz = np.array(box[:3]), np.array(box[:3]) + np.array(box[3:]) - 1  # inclusive
        # the box cut out by SimpleITK: a NumPy view of the whole image is a copy of it when its buffer is shared
        label_box, ct_box = (sitk.RegionOfInterest(image, box[3:], box[:3]) for image in (label, ct))
        mask = sitk.GetArrayViewFromImage(label_box) == value
        hu = sitk.GetArrayViewFromImage(ct_box)[mask]
        axis = head_foot_axis(grid.direction_matrix)  # index axis: x 0, y 1, z 2; the mask's array axis is 2 - axis
        mean = float(hu.mean(dtype=np.float64))
        p5, median, p95 = (float(v) for v in np.percentile(hu, (5.0, 50.0, 95.0)))
        low_mm, high_mm = _world_box_mm(grid, start_xyz, end_xyz)
        voxels = int(shape.GetNumberOfPixels(value))
        statistics[name] = OrganStatistics(
            organ=name,
            label=value,
            voxels=voxels,
            volume_ml=voxels * voxel_ml,
            mean_hu=mean,
            median_hu=median,
            percentile_5_hu=p5,
            percentile_95_hu=p95,
            bbox_min_mm=low_mm,
            bbox_max_mm=high_mm,
            bbox_extent_mm=tuple(float(h - lo) for lo, h in zip(low_mm, high_mm, strict=True)),  # type: ignore[arg-type]
            connected_components=_connected_components(mask),
            scan_ends_touched=cut_off_ends(
                _sections(mask, 2 - axis), int(start_xyz[axis]), int(end_xyz[axis]), grid.size[axis]
            ),
        )
    return statistics


def _require_same_grid(ct: sitk.Image, label: sitk.Image) -> Grid:
    """The grid of `ct` after checking the pair: 3-D, int16 and uint8, `label` on the grid of `ct`."""
    for image, what, pixel_id in ((ct, "CT", sitk.sitkInt16), (label, "label", sitk.sitkUInt8)):
        if image.GetDimension() != 3:
            raise ValueError(f"{what}: {image.GetDimension()}-D image; expected 3-D")
        if image.GetPixelID() != pixel_id:
            expected = sitk.GetPixelIDValueAsString(pixel_id)
            raise ValueError(f"{what}: pixel type {image.GetPixelIDTypeAsString()}; expected {expected}")
    grid = grid_of(ct)
    mismatch = grid_of(label).differences(grid)
    if mismatch:
        raise ValueError(f"label not on the grid of its CT (label first): {'; '.join(mismatch)}")
    return grid


def _world_box_mm(
    grid: Grid, start_xyz: np.ndarray, end_xyz: np.ndarray
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(min, max) xyz mm of the world positions of the 8 corner voxel centres of an inclusive index box."""
    low, high = physical_box(grid, start_xyz, end_xyz)
    return tuple(float(v) for v in low), tuple(float(v) for v in high)  # type: ignore[return-value]


def _connected_components(mask_zyx: np.ndarray) -> int:
    """The number of 26-connected pieces of a boolean mask (SimpleITK: inference does not load scipy.ndimage)."""
    components = sitk.ConnectedComponentImageFilter()
    components.FullyConnectedOn()
    components.Execute(sitk.GetImageFromArray(mask_zyx.view(np.uint8)))
    return int(components.GetObjectCount())


def head_foot_axis(direction_matrix: np.ndarray) -> int:
    """The index axis (0 x, 1 y, 2 z) that runs nearest the patient's head-foot axis: the column of the direction
    matrix with the largest world z (LPS superior) component. The slice axis of an axial CT, not of one stored
    sagittally or coronally."""
    return int(np.argmax(np.abs(np.asarray(direction_matrix)[2, :])))


def _sections(mask: np.ndarray, array_axis: int) -> np.ndarray:
    """The organ's voxels in each slice across `array_axis` of a mask (its bounding box)."""
    return np.count_nonzero(mask, axis=tuple(other for other in range(3) if other != array_axis))


def cut_off_ends(sections: np.ndarray, first: int, last: int, size: int) -> tuple[ScanEnd, ...]:
    """The scan ends that cut off an organ whose voxels per slice along the head-foot axis are `sections`, over
    slices first..last (inclusive) of the `size` the scan has: those it reaches with a section of at least
    `CUT_OFF_SECTION_SHARE` of its largest."""
    largest = max(int(sections.max()), 1)
    ends: list[ScanEnd] = []
    if first == 0 and sections[0] >= CUT_OFF_SECTION_SHARE * largest:
        ends.append("first")
    if last == size - 1 and sections[-1] >= CUT_OFF_SECTION_SHARE * largest:
        ends.append("last")
    return tuple(ends)


def _round(value: float | None, decimals: int) -> float | None:
    return None if value is None else round(value, decimals) + 0.0  # + 0.0: no "-0.0" in the files


def _round_xyz(values: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    return None if values is None else tuple(_round(v, MM_DECIMALS) for v in values)  # type: ignore[return-value]


# ---- files ----------------------------------------------------------------------------------------------------------


def _record(statistics: OrganStatistics) -> dict[str, Any]:
    """One organ as the JSON holds it: rounded plain numbers, lists for xyz, its organ name left to the key."""
    s = statistics.rounded()
    return {
        "label": s.label,
        "voxels": s.voxels,
        "volume_ml": s.volume_ml,
        "mean_hu": s.mean_hu,
        "median_hu": s.median_hu,
        "percentile_5_hu": s.percentile_5_hu,
        "percentile_95_hu": s.percentile_95_hu,
        "bbox_min_mm": None if s.bbox_min_mm is None else list(s.bbox_min_mm),
        "bbox_max_mm": None if s.bbox_max_mm is None else list(s.bbox_max_mm),
        "bbox_extent_mm": None if s.bbox_extent_mm is None else list(s.bbox_extent_mm),
        "connected_components": s.connected_components,
        "touches_scan_end": s.touches_scan_end,
        "scan_ends_touched": list(s.scan_ends_touched),
    }


def statistics_json(statistics: Mapping[str, OrganStatistics]) -> str:
    """The JSON text of one case: an object keyed by organ name (each entry's `organ`, in the given order), each
    organ an object of plain numbers rounded as `OrganStatistics.rounded`, xyz triples as lists, None as null."""
    text = json.dumps({s.organ: _record(s) for s in statistics.values()}, indent=2)
    return _FLAT_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m[1].split(",")) + "]", text) + "\n"


_FLAT_LIST = re.compile(r"\[\s*([^\[\]{}]*?)\s*\]")
"""A list of plain values as `json.dumps(indent=...)` spreads it over lines (xyz triples, scan ends): kept on one."""


def write_statistics_json(
    path: str | os.PathLike[str], statistics: Mapping[str, OrganStatistics], *, overwrite: bool = False
) -> None:
    """Write `statistics_json` to `path` (by convention `<case>.json`) atomically; FileExistsError if `path`
    exists and `overwrite` is not set."""
    write_text_atomic(path, statistics_json(statistics), overwrite=overwrite, suffix=Path(path).suffix)


def read_statistics_json(path: str | os.PathLike[str]) -> dict[str, OrganStatistics]:
    """The statistics of one case as `write_statistics_json` wrote them (so rounded), keyed by organ name.

    Raises `InputError` naming the file when it is not such a file (not JSON, a field missing or of the wrong kind).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(organ): _from_record(str(organ), record) for organ, record in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # json.JSONDecodeError is a ValueError
        raise InputError(f"{path}: not a statistics file of efficientscn ({type(error).__name__}: {error})") from error


def _from_record(organ: str, record: Mapping[str, Any]) -> OrganStatistics:
    ends = tuple(record["scan_ends_touched"])
    if not set(ends) <= {"first", "last"}:
        raise ValueError(f"{organ}: scan_ends_touched {list(ends)}; expected 'first' and/or 'last'")
    return OrganStatistics(
        organ=organ,
        label=int(record["label"]),
        voxels=int(record["voxels"]),
        volume_ml=float(record["volume_ml"]),
        mean_hu=_optional_float(record["mean_hu"]),
        median_hu=_optional_float(record["median_hu"]),
        percentile_5_hu=_optional_float(record["percentile_5_hu"]),
        percentile_95_hu=_optional_float(record["percentile_95_hu"]),
        bbox_min_mm=_optional_xyz(record["bbox_min_mm"]),
        bbox_max_mm=_optional_xyz(record["bbox_max_mm"]),
        bbox_extent_mm=_optional_xyz(record["bbox_extent_mm"]),
        connected_components=int(record["connected_components"]),
        scan_ends_touched=ends,  # type: ignore[arg-type]
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_xyz(values: Any) -> tuple[float, float, float] | None:
    if values is None:
        return None
    if len(values) != 3:
        raise ValueError(f"{values!r}: expected 3 coordinates (x, y, z)")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def write_statistics_csv(path: str | os.PathLike[str], rows: Mapping[str, Mapping[str, OrganStatistics]]) -> None:
    """Write a batch's `statistics.csv` atomically, replacing any earlier one: the header `CSV_COLUMNS`, then one
    row per case (the keys of `rows`, in their order) and organ, rounded as the JSON; the bounding box flattened to
    bbox_min_x_mm ... bbox_extent_z_mm, empty cells where the JSON has null, booleans as true/false. A case name
    that is not UTF-8 (a file name from another system) is written as its bytes, as its files are named."""
    with (
        atomic_output(path, suffix=".csv", overwrite=True) as temporary,
        temporary.open("w", encoding="utf-8", errors="surrogateescape", newline="") as file,
    ):
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for case, statistics in rows.items():
            for organ in statistics.values():
                writer.writerow(_csv_row(case, organ))


def _csv_row(case: str, statistics: OrganStatistics) -> list[str]:
    record = _record(statistics)
    cells: dict[str, Any] = {"case": case, "organ": statistics.organ}
    for key, value in record.items():
        if key.startswith("bbox_"):
            for axis, coordinate in zip(XYZ, value or (None, None, None), strict=True):
                cells[f"{key.removesuffix('_mm')}_{axis}_mm"] = coordinate
        elif key == "scan_ends_touched":
            cells[key] = SCAN_ENDS_SEPARATOR.join(value)
        else:
            cells[key] = value
    return [_csv_cell(cells[column]) for column in CSV_COLUMNS]


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
