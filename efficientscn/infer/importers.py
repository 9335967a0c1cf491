"""The seam through which networks saved in another format become ours before inference loads them.

An importer recognises the SavedModels of a format it knows (the original's released FLARE21 networks, say) and
returns, for each one, a folder with our export of it, verified, made once and kept in the cache. Importers are
found through the package's entry points (group `efficientscn.model_importers`, declared in pyproject.toml), so
the engine names none of them; a format is added by one class and one entry-point line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from efficientscn.model.specs import StageName

if TYPE_CHECKING:
    from efficientscn.infer.models import Device
    from efficientscn.infer.pipeline import InferenceConfig
    from efficientscn.infer.utils_module import Utils

logger = logging.getLogger(__name__)

IMPORTERS_GROUP = "efficientscn.model_importers"


@dataclass(frozen=True)
class ImportContext:
    """What an importer needs to verify an import as it will run."""

    device: Device
    precision: str
    """The precision inference runs in: an import is verified, and kept, per precision."""
    utils: Utils
    """The pre/post-processing inference uses, to make the verification's network inputs."""
    config: InferenceConfig
    probe: Path | None
    """A CT (file or DICOM folder) to verify on; None: the package's phantom."""


class ModelImporter(Protocol):
    """Imports the networks of one foreign format."""

    def __call__(self, folders: Mapping[StageName, Path], context: ImportContext) -> dict[StageName, Path]:
        """`folders` with each network this importer recognises replaced by the folder of its verified import;
        the others as they are."""
        ...


def registered_importers() -> list[ModelImporter]:
    """The importers the installed package declares; none (said in the log) where the package is not installed."""
    importers: list[ModelImporter] = [entry.load() for entry in entry_points(group=IMPORTERS_GROUP)]
    if not importers:
        logger.warning(
            "no model importers found (entry points %r): is the package installed (pip install -e .)? SavedModels "
            "in the original's format will run through their own graphs",
            IMPORTERS_GROUP,
        )
    return importers


def import_foreign(folders: Mapping[StageName, Path], context: ImportContext) -> dict[StageName, Path]:
    """`folders` after every registered importer has replaced the networks it recognises."""
    result = dict(folders)
    for importer in registered_importers():
        result = importer(result, context)
    return result
