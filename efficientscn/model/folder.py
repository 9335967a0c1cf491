"""A models folder: the layout the export commands write, `predict` reads and the original's repository ships.

`<models>/localization/` and `<models>/segmentation/` hold one SavedModel each (the stages of `specs.STAGE_NAMES`),
and `<models>/tf_utils_module/` optionally the traced pre/post-processing. No TensorFlow here: the command line
reads the layout without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from efficientscn.errors import InputError
from efficientscn.model.specs import STAGE_NAMES, StageName

UTILS_MODULE = "tf_utils_module"
"""The traced pre/post-processing module: its folder in a models folder, as the original names it."""
SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "submitted_saved_models"
"""The demonstration models that come with the repository (their README.md says what they are)."""
EXPORTED_MODELS = Path("saved_models")
"""Where the export commands write, relative to the working folder, as in the original."""


@dataclass(frozen=True)
class ModelsFolder:
    """A folder of one SavedModel per stage (and optionally the traced utils module)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(os.fspath(self.root)))

    def stage_folder(self, stage: StageName) -> Path:
        """`<root>/<stage>`, checked to be a SavedModel folder; InputError naming it otherwise."""
        folder = self.root / stage
        if not (folder / "saved_model.pb").is_file():
            raise InputError(f"{folder}: no SavedModel here (expected {stage}/saved_model.pb in the models folder)")
        return folder

    def stage_folders(self) -> dict[StageName, Path]:
        """The SavedModel folder of every stage, checked (see `stage_folder`)."""
        return {stage: self.stage_folder(stage) for stage in STAGE_NAMES}

    @property
    def utils(self) -> Path:
        """Where the traced utils module is, if the folder has one."""
        return self.root / UTILS_MODULE
