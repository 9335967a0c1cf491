"""What `efficientscn predict` is asked to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from efficientscn.imaging.geometry import SpacingFallback


@dataclass(frozen=True)
class PredictOptions:
    """What `efficientscn predict` was asked to do."""

    inputs: Path
    output: Path
    models: Path
    device: str | None = None
    """"cpu", "gpu" or None: a GPU when one is visible."""
    precision: str = "auto"
    utils: Path | None = None
    """A traced tf_utils_module to use instead of the functions in `efficientscn.infer.ops`."""
    overwrite: bool = False
    label_format: str | None = None
    """The label's format (`writers.LABEL_FORMATS`); None: NIfTI, or the CT's own format for MetaImage and NRRD."""
    companions: tuple[str, ...] = ()
    """Outputs also written for each case (`writers.COMPANIONS`: "dicom-seg", "rtstruct", "statistics", "preview")."""
    report: Path | None = None
    progress: bool = True
    spacing_fallback: SpacingFallback = "missing"
    """When a spacing of exactly 1,1,1 mm is taken for a missing one (see `imaging.geometry.SPACING_FALLBACKS`)."""
    force: bool = False
    """Segment an input the plausibility checks refuse as clearly not an abdominal CT in HU (warning instead)."""
    import_originals: bool = True
    """Import a network in the original's format (verified, cached) instead of running its graph as saved."""
