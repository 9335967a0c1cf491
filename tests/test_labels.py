"""The registry of organ facts: one table that the label maps, the preview, the DICOM outputs, the plausibility
checks, the statistics and `evaluate` read."""

from __future__ import annotations

import itertools

import numpy as np

from efficientscn.labels import NUM_LABELS, ORGAN_NAMES, ORGANS
from efficientscn.outputs.preview import LABEL_COLOURS


def test_the_flare_convention_numbers_the_four_organs_from_one() -> None:
    assert ORGAN_NAMES == {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
    assert NUM_LABELS == 5
    assert all(value == organ.label for value, organ in ORGANS.items())


def test_the_organs_colours_are_far_apart_and_the_preview_uses_them() -> None:
    """Liver and kidney lie side by side: no two organs may look alike (at least 150 apart in RGB, where the colours
    the DICOM-SEG once had put liver and kidney 52 apart)."""
    colours = [np.array(organ.colour_rgb, float) for organ in ORGANS.values()]
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(colours, 2)) >= 150
    np.testing.assert_array_equal(LABEL_COLOURS[1:], colours)


def test_each_organs_plausible_volume_is_a_range_and_its_pieces_at_least_one() -> None:
    for organ in ORGANS.values():
        smallest, largest = organ.volume_ml
        assert 0 < smallest < largest and organ.pieces >= 1
        assert organ.snomed_code.isdigit() and organ.snomed_meaning.lower() == organ.name
