"""The `setup/` folder: cross-validation ID lists and the organ bounding-box table, in the original's formats.

setup/cv/all_train.txt, all_validation.txt    one case ID per line, sorted
setup/cv/<k>/train.txt, <k>/test.txt          fold k (1-based): test = fold k, train = all others
setup/landmark_bb.csv                         id,xmin,ymin,zmin,xmax,ymax,zmax (mm, no header)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from efficientscn.atomic import write_text_atomic
from efficientscn.data.layout import FlareDataset
from efficientscn.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = 4
DEFAULT_SEED = 0

BoundingBox = tuple[np.ndarray, np.ndarray]
"""(min_xyz, max_xyz) physical corners in mm."""


def read_id_list(path: str | Path) -> list[str]:
    """Case IDs of a split file, one per line; surrounding white space and empty lines are ignored."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InputError(f"{path}: cannot read split file ({error.strerror})") from error
    return [line.strip() for line in lines if line.strip()]


def _id_list_text(ids: Iterable[str]) -> str:
    return "".join(f"{case}\n" for case in ids)


def cv_folds(train_ids: Sequence[str], folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> list[list[str]]:
    """Split IDs into `folds` disjoint test folds of near-equal size, each sorted, reproducibly for a seed.

    The order comes from a SHA-256 of "<seed>:<id>", so a split depends only on the IDs and the seed, never on
    the random-number generator of a Python or NumPy version. Earlier folds are the smaller ones, as in the
    original (90/90/90/91 of 361).
    """
    ids = sorted(set(train_ids))
    if len(ids) != len(train_ids):
        raise ValueError("duplicate case IDs in the training list")
    if not 2 <= folds <= len(ids):
        raise ValueError(f"cannot make {folds} folds from {len(ids)} cases")
    shuffled = sorted(ids, key=lambda case: hashlib.sha256(f"{seed}:{case}".encode()).hexdigest())
    base, extra = divmod(len(ids), folds)
    sizes = [base + (1 if k >= folds - extra else 0) for k in range(folds)]
    bounds = np.cumsum([0, *sizes])
    return [sorted(shuffled[bounds[k] : bounds[k + 1]]) for k in range(folds)]


def cv_setup_files(
    train_ids: Sequence[str], validation_ids: Sequence[str], folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> dict[str, str]:
    """The text of every cv file, by path relative to `setup/cv/`."""
    all_train = sorted(train_ids)
    files = {"all_train.txt": _id_list_text(all_train), "all_validation.txt": _id_list_text(sorted(validation_ids))}
    for k, test in enumerate(cv_folds(all_train, folds, seed), start=1):
        test_set = set(test)
        files[f"{k}/train.txt"] = _id_list_text(case for case in all_train if case not in test_set)
        files[f"{k}/test.txt"] = _id_list_text(test)
    return files


def write_cv_setup(
    cv_dir: str | Path,
    train_ids: Sequence[str],
    validation_ids: Sequence[str],
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    overwrite: bool = False,
) -> list[Path]:
    """Write the cv split files under `cv_dir`; returns the files written.

    Splits are decisions users build on: a complete setup (its `all_train.txt`, written last) is kept unless
    `overwrite` is set, with a warning if its cases differ from `train_ids`. A setup left incomplete by an
    interrupted run is written anew. With `overwrite`, fold folders beyond `folds` are removed, so that no stale
    fold overlaps the new ones.
    """
    cv_dir = Path(cv_dir)
    complete_marker = cv_dir / "all_train.txt"
    if complete_marker.exists() and not overwrite:
        kept = read_id_list(complete_marker)
        if sorted(kept) != sorted(train_ids):
            logger.warning(
                "%s: kept the existing cv setup of %d cases, which differs from the %d training cases on disk "
                "(%d not in it); regenerate it with overwrite",
                cv_dir,
                len(kept),
                len(train_ids),
                len(set(train_ids) - set(kept)),
            )
        else:
            logger.info("%s: cv setup exists, kept", cv_dir)
        return []
    files = cv_setup_files(train_ids, validation_ids, folds, seed)
    if overwrite and cv_dir.is_dir():
        _remove_stale_folds(cv_dir, folds)
    in_writing_order = sorted(files, key=lambda name: name == complete_marker.name)  # the marker last
    return [write_text_atomic(cv_dir / name, files[name], overwrite=True) for name in in_writing_order]


def _remove_stale_folds(cv_dir: Path, folds: int) -> None:
    """Delete the split files of fold folders numbered above `folds` (and the folders, once empty)."""
    for folder in cv_dir.iterdir():
        if folder.is_dir() and folder.name.isdigit() and int(folder.name) > folds:
            for name in ("train.txt", "test.txt"):
                (folder / name).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
            logger.info("%s: removed fold %s, beyond the %d folds written now", cv_dir, folder.name, folds)


def check_split(split_file: str | Path, dataset: FlareDataset, *, small: bool = False) -> list[str]:
    """The IDs of a training split file, after checking that every case has its image and mask on disk.

    Raises `InputError` naming the split file and the missing cases, so a training run fails before it starts.
    """
    ids = read_id_list(split_file)
    missing = [
        case
        for case in ids
        if not (dataset.training_image(case, small).is_file() and dataset.training_mask(case, small).is_file())
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"{split_file}: {len(missing)} case(s) without image or mask in {dataset.root}: {shown}")
    return ids


def fold_ids(dataset: FlareDataset, cv: int, *, small: bool) -> tuple[list[str], list[str]]:
    """(train, test) IDs of fold `cv` from the dataset's setup/cv; fold 0 trains on all cases and has no test.

    Every listed case must exist (`check_split` raises an `InputError` naming the missing one).
    """
    fold = dataset.cv_dir / str(cv)
    train_file = dataset.cv_dir / "all_train.txt" if cv == 0 else fold / "train.txt"
    train = check_split(train_file, dataset, small=small)
    if not train:
        raise InputError(f"{train_file}: no cases to train on")
    return train, [] if cv == 0 else check_split(fold / "test.txt", dataset, small=small)


def read_landmark_bb(path: str | Path) -> dict[str, BoundingBox]:
    """Read `landmark_bb.csv` (id, xmin, ymin, zmin, xmax, ymax, zmax in mm, no header)."""
    path = Path(path)
    boxes: dict[str, BoundingBox] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            if len(fields) != 7:
                raise ValueError(f"{len(fields)} fields, expected 7")
            values = np.array([float(v) for v in fields[1:]])
        except ValueError as error:
            raise InputError(f"{path}, line {number}: not 'id,xmin,ymin,zmin,xmax,ymax,zmax' ({error})") from error
        boxes[fields[0]] = (values[:3], values[3:])
    return boxes


def write_landmark_bb(path: str | Path, boxes: Mapping[str, BoundingBox], *, overwrite: bool = False) -> Path:
    """Write `landmark_bb.csv` atomically, one row per case sorted by ID, floats at full precision."""
    rows = [
        ",".join([case] + [repr(float(v)) for v in (*box[0], *box[1])]) + "\n" for case, box in sorted(boxes.items())
    ]
    return write_text_atomic(path, "".join(rows), overwrite=overwrite)


def flare21_ids() -> tuple[list[str], list[str]]:
    """The FLARE21 case IDs: training train_000..train_360 and validation validation_001..validation_050."""
    return [f"train_{i:03d}" for i in range(361)], [f"validation_{i:03d}" for i in range(1, 51)]
