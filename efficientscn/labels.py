"""The organs and their FLARE21 label values, the one registry of organ facts every part of the package reads:
0 background, 1 liver, 2 kidney (left and right), 3 spleen, 4 pancreas; each organ's SNOMED CT code (DICOM
outputs), display colour (preview and DICOM outputs), the volume range of a whole adult organ and the pieces it may
show (plausibility)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Organ:
    """One organ of the label convention."""

    label: int
    """Its value in a label map."""
    name: str
    snomed_code: str
    """Its SNOMED CT concept (the segmented property type of a DICOM segment)."""
    snomed_meaning: str
    colour_rgb: tuple[int, int, int]
    """Display colour, 0-255: four hues far apart, so that neighbouring organs never look alike."""
    volume_ml: tuple[float, float]
    """The smallest and largest volume of the whole organ(s) in adults (kidney: both); outside: a warning."""
    pieces: int
    """How many pieces it may show: the kidneys two, the pancreas two (thin, it often looks split in thick slices),
    the liver and the spleen one."""


ORGANS: dict[int, Organ] = {
    organ.label: organ
    for organ in (
        Organ(1, "liver", "10200004", "Liver", (230, 60, 40), (500.0, 4000.0), 1),
        Organ(2, "kidney", "64033007", "Kidney", (255, 210, 0), (100.0, 800.0), 2),
        Organ(3, "spleen", "78961009", "Spleen", (40, 120, 255), (40.0, 1500.0), 1),
        Organ(4, "pancreas", "15776009", "Pancreas", (50, 200, 80), (20.0, 300.0), 2),
    )
}
"""Organ label value -> its facts, in label order."""

ORGAN_CATEGORY = ("91723000", "Anatomical Structure")
"""The SNOMED CT category of every organ (DICOM CID 7150): code value and meaning."""

ORGAN_NAMES: dict[int, str] = {value: organ.name for value, organ in ORGANS.items()}
"""Organ label value -> organ name, for labels 1..4 (both kidneys share label 2)."""

NUM_LABELS = 1 + len(ORGANS)
"""Background plus the four organs."""
