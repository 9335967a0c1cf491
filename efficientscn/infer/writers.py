"""What `predict` writes for a case, behind one small interface: the seam new output formats plug into.

A `LabelWriter` names its output for a case and writes it from the `CaseResult`; the first writer of a run is
the label map, whose presence marks a case as done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.names import LABEL_SUFFIX, label_suffix_for
from efficientscn.imaging.write import write_label
from efficientscn.infer.preview import write_preview

PREVIEW_FOLDER = "preview"


@dataclass(frozen=True)
class CaseResult:
    """One segmented case: the CT on its processing grid, the label there and on the CT's own grid."""

    ct: CanonicalCT
    label_zyx: np.ndarray
    """uint8 on the canonical grid."""
    label: sitk.Image
    """uint8 on the exact grid of the CT as read."""


class LabelWriter(Protocol):
    """One output of a case."""

    name: str
    """What the run report calls it (its seconds per case)."""

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        """Where this writer puts case `case_id`'s output inside the output folder (`source`: the case's CT)."""

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        """Write the output atomically; FileExistsError if `path` exists and `overwrite` is not set."""


@dataclass(frozen=True)
class ImageLabelWriter:
    """The label map as one image file, `<case><suffix>` (uint8: 0 background, 1 liver, ..., 4 pancreas), in the
    format of its CT where that keeps the CT's geometry exactly (see `label_suffix_for`)."""

    name: str = "write"

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        return output / f"{case_id}{LABEL_SUFFIX if source is None else label_suffix_for(source)}"

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        write_label(result.label, path, overwrite=overwrite)


@dataclass(frozen=True)
class PreviewWriter:
    """A quick-look PNG, `preview/<case>.png`, of the label just written (so it replaces an older one)."""

    name: str = "preview"

    def path(self, output: Path, case_id: str, source: Path | None = None) -> Path:
        return output / PREVIEW_FOLDER / f"{case_id}.png"

    def write(self, result: CaseResult, path: Path, *, overwrite: bool) -> None:
        write_preview(result.ct.array_zyx, result.label_zyx, result.ct.spacing_zyx, path, overwrite=True)
