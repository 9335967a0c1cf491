"""Plausibility checks: is the input a CT in Hounsfield units, and does each organ's result look like an organ?

The networks segment whatever they are given. An abdominal CT has air (around the body, in the bowel and lungs)
at or below -900 HU; what is not air is mostly soft tissue, -100 to 200 HU (62-76 % on the shared CTs), and very
little of it is above 500 HU (dense bone; at most 1.3 % there). An input without air, or whose non-air part is not
mostly soft tissue or much of it above 500 HU, is clearly not such a CT: an MR image (0-4000), inverted
intensities (air at +1000), noise, a blank volume. It is refused unless forced. The
organs found are checked against the volumes of whole adult organs and for being in one piece (two for the
kidneys): what falls outside is said as a warning, since a scan may cut an organ off or not reach it at all.
The thresholds are below; the README lists them (docs/fidelity.md #47).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from efficientscn.imaging.pieces import piece_sizes
from efficientscn.labels import NUM_LABELS, ORGAN_NAMES

AIR_HU = -900
"""At or below: air."""
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


AIR = Share("air (<= -900 HU) of all voxels", refuse_below=0.001, warn_below=0.01)
SOFT_TISSUE = Share("soft tissue (-100 to 200 HU) of the non-air voxels", refuse_below=0.2, warn_below=0.4)
DENSE = Share("voxels above 500 HU of the non-air voxels", refuse_above=0.15, warn_above=0.05)

ORGAN_VOLUME_ML: dict[int, tuple[float, float]] = {
    1: (500.0, 4000.0),
    2: (100.0, 800.0),
    3: (40.0, 1500.0),
    4: (20.0, 300.0),
}
"""Label -> (smallest, largest) volume in ml of the whole organ(s) in adults (kidney: both); outside: a warning."""
ORGAN_PIECES = {1: 1, 2: 2, 3: 1, 4: 2}
"""How many pieces an organ may show: the kidneys two, the pancreas two (thin, it often looks split in thick
slices), the liver and the spleen one."""
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
    """The share of air, and the shares of soft tissue and dense voxels in what is not air, of an int16 HU CT,
    against the thresholds."""
    sample = ct_zyx[::SAMPLING, ::SAMPLING, ::SAMPLING]
    air = sample <= AIR_HU
    not_air = max(int(sample.size - np.count_nonzero(air)), 1)
    soft = np.count_nonzero((sample >= SOFT_TISSUE_HU[0]) & (sample <= SOFT_TISSUE_HU[1]))
    shares = {
        AIR: float(np.mean(air)),
        SOFT_TISSUE: soft / not_air,
        DENSE: np.count_nonzero(sample > DENSE_HU) / not_air,
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


def check_organs(label_zyx: np.ndarray, spacing_zyx: Sequence[float]) -> list[str]:
    """Warnings about each organ of a label on its CT's grid: absent, a volume outside that of a whole adult
    organ, or scattered into more pieces than it has."""
    sample = np.ascontiguousarray(label_zyx[::SAMPLING, ::SAMPLING, ::SAMPLING])
    voxel_ml = float(np.prod(spacing_zyx)) * SAMPLING**3 / 1000.0
    counts = np.bincount(sample.ravel(), minlength=NUM_LABELS)
    warnings = []
    for label, (smallest, largest) in ORGAN_VOLUME_ML.items():
        name, volume = ORGAN_NAMES[label], counts[label] * voxel_ml
        if counts[label] == 0:
            warnings.append(f"{name}: none found (not in the scan?)")
            continue
        if volume < smallest:
            warnings.append(f"{name}: {volume:.3g} ml, less than a whole one ({smallest:g} ml; cut off by the scan?)")
        elif volume > largest:
            warnings.append(f"{name}: {volume:.3g} ml, more than a whole one ({largest:g} ml)")
        main = _main_pieces_share(label_zyx, label, _bounding_box(sample == label, SAMPLING), ORGAN_PIECES[label])
        if main < MAIN_PIECES_SHARE:
            pieces = "piece holds" if ORGAN_PIECES[label] == 1 else f"{ORGAN_PIECES[label]} pieces hold"
            warnings.append(f"{name}: scattered; its largest {pieces} only {100 * main:.0f} % of it")
    return warnings


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
    sizes = piece_sizes(lambda begin, end: region[begin:end] == label, region.shape[0])  # a slab at a time
    return float(sizes[:pieces].sum() / sizes.sum())
