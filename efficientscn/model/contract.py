"""The input contract of a trained network: the grid and intensities inference must give it, as it was trained.

An export records its network's contract in the SavedModel's metadata and inference reads it from there (as
nnU-Net's plans travel with its models), so a network trained on other valid sizes or at another spacing runs at
its own. The paper's two contracts are defined here, once; the training-data configurations take their defaults
from them. No TensorFlow here: the data side imports this module in its loader workers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from efficientscn.settings import from_record, to_record

INTENSITY_SCALE_HU = 2048.0
"""Network inputs are HU / 2048 clamped to [-1, 1], in training and inference (the original's scaling)."""


@dataclass(frozen=True)
class InputContract:
    """What a network's input looks like at inference; sizes and spacings in z, y, x order."""

    spacing_mm: float
    """Voxel spacing of the network input (grown isotropically by inference where the scan or box does not fit)."""
    valid_sizes_zyx: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    """Per axis, the input sizes the network was trained on; inference pads or crops to one of them."""
    smoothing_sigma_mm: float
    """Gaussian smoothing of the CT before it is resampled to `spacing_mm` (0: none)."""
    intensity_scale_hu: float = INTENSITY_SCALE_HU

    def __post_init__(self) -> None:
        """Checks what inference can honour; each axis's sizes are kept sorted, as the valid-size rule reads them."""
        sizes = self.valid_sizes_zyx
        if len(sizes) != 3 or not all(sizes) or not all(int(v) > 0 for axis in sizes for v in axis):
            raise ValueError(f"valid sizes {sizes} are not three non-empty lists of positive sizes (z, y, x)")
        if not (math.isfinite(self.spacing_mm) and self.spacing_mm > 0) or not self.smoothing_sigma_mm >= 0:
            raise ValueError(f"spacing {self.spacing_mm} mm or smoothing {self.smoothing_sigma_mm} mm is not usable")
        if self.intensity_scale_hu != INTENSITY_SCALE_HU:
            raise ValueError(
                f"intensity scale {self.intensity_scale_hu:g} HU; inference scales by {INTENSITY_SCALE_HU:g} only"
            )
        object.__setattr__(self, "valid_sizes_zyx", tuple(tuple(sorted(int(v) for v in axis)) for axis in sizes))

    @property
    def largest_size_zyx(self) -> tuple[int, int, int]:
        """The largest valid input size per axis."""
        return tuple(axis[-1] for axis in self.valid_sizes_zyx)  # type: ignore[return-value]

    def describe(self) -> str:
        """One line for the log."""
        sizes = " x ".join(f"{axis[0]}-{axis[-1]}" for axis in self.valid_sizes_zyx)
        return f"{self.spacing_mm:g} mm, valid sizes (zyx) {sizes}, smoothing {self.smoothing_sigma_mm:g} mm"

    def to_record(self) -> dict[str, Any]:
        return to_record(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> InputContract:
        """The contract of an export's metadata; ValueError for one inference cannot honour."""
        return from_record(cls, record)


PAPER_LOCALIZATION = InputContract(
    spacing_mm=6.0,
    valid_sizes_zyx=(tuple(range(32, 257, 16)), (32, 48, 64, 80), (32, 48, 64, 80)),
    smoothing_sigma_mm=0.0,  # localized unsmoothed, though trained smoothed, as the original (docs/fidelity.md #3)
)
"""Stage 1 as in the paper: the whole CT at 6 mm (docs/fidelity.md #3 for the smoothing)."""

PAPER_SEGMENTATION = InputContract(
    spacing_mm=2.0,
    valid_sizes_zyx=((32, 64, 96, 128, 160), (32, 64, 96, 128), (32, 64, 96, 128, 160)),
    smoothing_sigma_mm=1.0,
)
"""Stage 2 as in the paper: the organ box at 2 mm, smoothed by 1 mm first."""
