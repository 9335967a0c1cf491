"""The FLARE21 label convention shared by every stage: 0 background, 1 liver, 2 kidney, 3 spleen, 4 pancreas."""

ORGAN_NAMES: dict[int, str] = {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
"""Organ label value -> organ name, for labels 1..4 (both kidneys share label 2)."""

NUM_LABELS = 5
"""Background plus the four organs."""
