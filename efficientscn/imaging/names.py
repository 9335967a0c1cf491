"""Image file names: which endings are images, and the FLARE case ID of a path."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
"""File endings read as images; a folder is read as a DICOM series."""

LABEL_SUFFIX = ".nii.gz"
"""The label maps this project writes: compressed NIfTI, as FLARE's (for NIfTI CTs and DICOM folders)."""

_LABEL_SUFFIX_OF = {".mha": ".mha", ".mhd": ".mha", ".nrrd": ".nrrd", ".nhdr": ".nrrd"}
"""CT formats whose geometry NIfTI cannot hold exactly (its header stores origin and direction as float32 and
makes the direction orthonormal): their labels are written in the same format, onto the CT's grid exactly
(docs/fidelity.md #48)."""


def image_suffix(path: str | os.PathLike[str]) -> str:
    """The image-format ending of a path (".nii.gz" counts as one), or "" if it has none we read."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


def case_id(path: str | os.PathLike[str]) -> str:
    """The FLARE case ID of an image path: file name without its image ending and without a `_0000` channel tag.

    `TrainingImg/train_000_0000.nii.gz` and `TrainingMask/train_000.nii.gz` both give `train_000`; a DICOM folder
    gives its folder name.
    """
    name = Path(path).name
    suffix = image_suffix(path)
    stem = name[: len(name) - len(suffix)] if suffix else name
    untagged = stem.removesuffix("_0000")
    return untagged or stem  # `_0000.nii.gz` is case `_0000`: an empty ID would name a hidden label `.nii.gz`


def label_suffix_for(source: str | os.PathLike[str]) -> str:
    """The ending of the label written for the CT at `source`: its own format for MetaImage and NRRD, else
    compressed NIfTI."""
    return _LABEL_SUFFIX_OF.get(image_suffix(source), LABEL_SUFFIX)


def is_image_path(path: Path) -> bool:
    """Whether a folder entry is meant as a CT: a folder (a DICOM series) or a name with an image ending, also a
    link that leads nowhere (its case then fails with the reason instead of vanishing from the batch)."""
    return path.is_dir() or (image_suffix(path) != "" and (path.is_file() or path.is_symlink()))
