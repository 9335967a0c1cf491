"""Plausibility checks: is the input a CT in Hounsfield units, and does each organ's result look like an organ?

The networks segment whatever they are given. An abdominal CT has air (around the body, in the bowel and lungs)
at or below -900 HU; what is not air is mostly soft tissue, -100 to 200 HU (62-76 % on the shared CTs), and very
little of it is above 500 HU (dense bone; at most 1.3 % there). The body lies inside the field of view, so the
edges of the axial slices are mostly air (91-100 % on the shared CTs). An input without air, whose non-air part is
not mostly soft tissue or much of it above 500 HU, or whose slices' edges are not air, is clearly not such a CT:
an MR image (0-4000), inverted intensities (air at +1000, or air and soft tissue swapped: -1000 - HU), noise, a
blank volume. It is refused unless forced. A segmentation without any organ fails its case (`gate_organs`); the
organs found are checked against the volumes of whole adult organs and for being in one piece (two for the
kidneys): what falls outside is said as a warning, naming the likely cause (cut off by the scan's end, or missed
in part). The thresholds are below, the organs' in `labels.ORGANS`; the README lists them (docs/fidelity.md #47).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from efficientscn.errors import InputError
from efficientscn.imaging.pieces import piece_sizes, slab_depth
from efficientscn.labels import NUM_LABELS, ORGANS
from efficientscn.outputs.statistics import ScanEnd, cut_off_ends

AIR_THRESHOLD_HU = -900
"""At or below: air (a threshold; `imaging.resample.AIR_HU` is the value air is filled in with)."""
SOFT_TISSUE_HU = (-100, 200)
"""Soft tissue: organs, muscle, fat's upper end."""
DENSE_HU = 500
"""Above: dense bone and metal, a small part of any abdomen."""


@dataclass(frozen=True)
class Share:
    """A share of voxels a CT has at least (`refuse_below`, `warn_below`) or at most (`*_above`)."""

    what: str
    refuse_below: float = 0.0
    warn_below: float = 0.0
    refuse_above: float = 1.0
    warn_above: float = 1.0


AIR = Share(f"air (<= {AIR_THRESHOLD_HU} HU) of all voxels", refuse_below=0.001, warn_below=0.01)
SOFT_TISSUE = Share(
    f"soft tissue ({SOFT_TISSUE_HU[0]} to {SOFT_TISSUE_HU[1]} HU) of the non-air voxels",
    refuse_below=0.2,
    warn_below=0.4,
)
DENSE = Share(f"voxels above {DENSE_HU} HU of the non-air voxels", refuse_above=0.15, warn_above=0.05)
AIR_AT_EDGES = Share(
    f"air (<= {AIR_THRESHOLD_HU} HU) of the voxels at the edges of the axial slices", refuse_below=0.1, warn_below=0.5
)
"""The body lies inside the field of view: where air is inside a body of soft tissue, the intensities are inverted."""

MAIN_PIECES_SHARE = 0.9
"""The main pieces must hold this share of an organ's voxels; less: a warning (scattered islands)."""
SAMPLING = 2
"""Every SAMPLING-th voxel along each axis is looked at: the checks are coarse, and cheap on a large CT."""


@dataclass(frozen=True)
class Findings:
    """What the checks found: reasons to refuse the input, and warnings."""

    refusals: list[str]
    warnings: list[str]


def check_intensities(ct_zyx: np.ndarray) -> Findings:
    """The share of air, the shares of soft tissue and dense voxels in what is not air, and the share of air at the
    edges of the axial slices (`ct_zyx` on the canonical grid: z is the head-foot axis), of an int16 HU CT, against
    the thresholds."""
    sample = ct_zyx[::SAMPLING, ::SAMPLING, ::SAMPLING]
    air = sample <= AIR_THRESHOLD_HU
    not_air = max(int(sample.size - np.count_nonzero(air)), 1)
    soft = np.count_nonzero((sample >= SOFT_TISSUE_HU[0]) & (sample <= SOFT_TISSUE_HU[1]))
    edges = np.concatenate([ct_zyx[::SAMPLING, (0, -1), :].ravel(), ct_zyx[::SAMPLING, :, (0, -1)].ravel()])
    shares = {
        AIR: float(np.mean(air)),
        SOFT_TISSUE: soft / not_air,
        DENSE: np.count_nonzero(sample > DENSE_HU) / not_air,
        AIR_AT_EDGES: float(np.mean(edges <= AIR_THRESHOLD_HU)),
    }
    refusals, warnings = [], []
    for share, value in shares.items():
        percent = f"{share.what}: {100 * value:.2g} %"
        if value < share.refuse_below:
            refusals.append(f"{percent}, where an abdominal CT has at least {100 * share.refuse_below:g} %")
        elif value > share.refuse_above:
            refusals.append(f"{percent}, where an abdominal CT has at most {100 * share.refuse_above:g} %")
        elif value < share.warn_below:
            warnings.append(f"{percent}, little for an abdominal CT")
        elif value > share.warn_above:
            warnings.append(f"{percent}, much for an abdominal CT")
    return Findings(refusals, warnings)


def gate_input(ct_zyx: np.ndarray, source: Path, *, force: bool = False) -> list[str]:
    """The warnings about an input CT; InputError naming `source` if it is clearly not an abdominal CT in HU, unless
    `force` (its reasons are then warnings too)."""
    findings = check_intensities(ct_zyx)
    if findings.refusals and not force:
        raise InputError(
            f"{source}: not like a CT in Hounsfield units: {'; '.join(findings.refusals)} (--force segments it anyway)"
        )
    return [*findings.refusals, *findings.warnings]


def gate_organs(label_zyx: np.ndarray, spacing_zyx: Sequence[float], source: Path) -> list[str]:
    """The warnings about the organs of a segmentation (`check_organs`); InputError naming `source` when it holds no
    organ at all: nothing to write, and a label of background only would pass for a result."""
    if not label_zyx.any():
        raise InputError(
            f"{source}: no organs found in the segmentation: not an abdominal CT, or not one the models can segment "
            "(no label written)"
        )
    return check_organs(label_zyx, spacing_zyx)


def check_organs(label_zyx: np.ndarray, spacing_zyx: Sequence[float]) -> list[str]:
    """Warnings about each organ of a label on its CT's canonical grid (z the head-foot axis, inferior first):
    absent, a volume outside that of a whole adult organ (smaller: cut off by the scan where it fills an end slice
    as `statistics.cut_off_ends` judges, else missed in part), or scattered into more pieces than it has."""
    sample = np.ascontiguousarray(label_zyx[::SAMPLING, ::SAMPLING, ::SAMPLING])
    voxel_ml = float(np.prod(spacing_zyx)) * SAMPLING**3 / 1000.0
    counts = [np.count_nonzero(sample == label) for label in range(NUM_LABELS)]  # bincount: 8 bytes per voxel
    warnings = []
    for label, organ in ORGANS.items():
        (smallest, largest), name, volume = organ.volume_ml, organ.name, counts[label] * voxel_ml
        if counts[label] == 0:
            warnings.append(f"{name}: none found (not in the scan?)")
            continue
        box = _bounding_box(sample == label, SAMPLING)
        if volume < smallest:
            ends = _cut_off_ends(label_zyx, label, box)
            if ends:
                where = " and ".join(SCAN_END_NAMES[end] for end in ends)
                warnings.append(
                    f"{name}: {volume:.3g} ml, less than a whole one ({smallest:g} ml): cut off by the scan? (it fills "
                    f"the scan's {where} slice)"
                )
            else:
                warnings.append(f"{name}: {volume:.3g} ml, smaller than a whole one ({smallest:g} ml): missed in part?")
        elif volume > largest:
            warnings.append(f"{name}: {volume:.3g} ml, more than a whole one ({largest:g} ml)")
        main = _main_pieces_share(label_zyx, label, box, organ.pieces)
        if main < MAIN_PIECES_SHARE:
            pieces = "piece holds" if organ.pieces == 1 else f"{organ.pieces} pieces hold"
            warnings.append(f"{name}: scattered; its largest {pieces} only {100 * main:.0f} % of it")
    return warnings


SCAN_END_NAMES = {"first": "lowest", "last": "highest"}
"""The scan's ends on the canonical (LPS) grid, whose z runs from the feet to the head."""


def _cut_off_ends(label_zyx: np.ndarray, label: int, box: tuple[slice, ...]) -> tuple[ScanEnd, ...]:
    """The scan ends (along z, the head-foot axis of the canonical grid) that cut the organ off, counted at full
    resolution inside its bounding box."""
    sections = np.count_nonzero(label_zyx[box] == label, axis=(1, 2))
    present = np.flatnonzero(sections)
    start = box[0].start or 0
    return cut_off_ends(sections[present[0] : present[-1] + 1], start + present[0], start + present[-1], len(label_zyx))


def _bounding_box(mask: np.ndarray, scale: int) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask sampled every `scale` voxels, on the full grid (grown by `scale`)."""
    box = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(other for other in range(3) if other != axis)))
        box.append(slice(max(present[0] - 1, 0) * scale, (present[-1] + 2) * scale))
    return tuple(box)


def _main_pieces_share(label_zyx: np.ndarray, label: int, box: tuple[slice, ...], pieces: int) -> float:
    """The share of an organ's voxels in its `pieces` largest connected pieces (26-connectivity), counted at full
    resolution inside its bounding box (thin organs fall apart when sampled)."""
    region = label_zyx[box]
    depth = slab_depth(region.shape)  # a large region a slab at a time
    sizes = piece_sizes(lambda begin, end: region[begin:end] == label, region.shape[0], depth)
    return float(sizes[:pieces].sum() / sizes.sum())
