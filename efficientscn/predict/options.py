"""What `efficientscn predict` is asked to do."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from efficientscn.imaging.geometry import SpacingFallback
from efficientscn.infer.runtime import SLAB_BUDGET_BYTES
from efficientscn.predict.shards import Shard

LOCAL_CLUSTER = "local:"
"""`--cluster local:N`: a Dask `LocalCluster` of N worker processes on this machine."""


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
    slab_budget_bytes: int | None = SLAB_BUDGET_BYTES
    """The networks' full-resolution levels run by slabs fitting this budget; None: whole (`InferenceConfig`)."""
    shard: Shard | None = None
    """Only this part of the batch's cases (`shards`), with its own report."""
    cluster: str | None = None
    """Run the cases on a Dask cluster: a scheduler's address (`tcp://host:8786`) or `local:N` for N worker processes
    on this machine (`cluster`); None: in this process."""


def check_cluster_address(text: str) -> str:
    """`text` if it names a cluster `predict` can run on: `local:N` (N >= 1) or a scheduler address; ValueError
    otherwise."""
    if text.startswith(LOCAL_CLUSTER):
        count = text[len(LOCAL_CLUSTER) :]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{text}: expected local:N with N worker processes (N >= 1)")
        return text
    if not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://\S+", text):
        raise ValueError(f"{text}: expected a Dask scheduler's address (tcp://host:8786) or local:N")
    return text
