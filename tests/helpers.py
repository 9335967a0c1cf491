"""Test helpers: the real CT cases of tests/ct_data, a clone of the original repository and synthetic phantoms.

The real cases are in tests/ct_data (or the folder named by $EFFICIENTSCN_SHARED_DATA); the few files of it that are
made from others (derived_data) are made on first use into a folder of the test run. The original's released models
and setup folder are read from a clone of the original repository, named by $EFFICIENTSCN_ORIGINAL (default:
../shared/reference/original-repo beside this repository). Without them the tests that need them are skipped
locally; under CI=true (which .ci/run sets) that is a failure, not a skip.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import highdicom
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from derived_data import derivations, make_file

from efficientscn.labels import ORGAN_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
CT_DATA = Path(os.environ.get("EFFICIENTSCN_SHARED_DATA", REPO_ROOT / "tests" / "ct_data")).absolute()
"""The real CTs, their FLARE labels and cases.json (see its README.md for their sources and licences). Absolute, as
are the folders below, since tests link to their files from elsewhere."""
ORIGINAL_URL = "https://github.com/franzthaler/FLARE21-EfficientSCN"
ORIGINAL = Path(
    os.environ.get("EFFICIENTSCN_ORIGINAL", REPO_ROOT.parent / "shared" / "reference" / "original-repo")
).absolute()
"""A clone of the original repository (GPL-3.0: it stays outside this one), or a folder of its layout."""
ORIGINAL_MODELS = ORIGINAL / "submitted_saved_models"
"""The original's released SavedModels: localization, tf_utils_module and segmentation (whole in a full clone)."""
ORIGINAL_SETUP = ORIGINAL / "setup"
"""The original's setup folder: cv splits and landmark_bb.csv of the FLARE21 training cases."""


def _load_cases() -> dict[str, dict]:
    path = CT_DATA / "cases.json"
    return {case["id"]: case for case in json.loads(path.read_text())} if path.is_file() else {}


SHARED_CASES = _load_cases()
MISSING = "<shared data missing>"


def skip_or_fail(message: str) -> NoReturn:
    """Skip the test for want of files from outside the repository, or fail it under CI=true, where every test must
    run."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_shared_data() -> Path:
    """The test data folder; skips the test if EFFICIENTSCN_SHARED_DATA names a folder without it, or fails it under
    CI."""
    if not SHARED_CASES:
        skip_or_fail(f"test data not found at {CT_DATA} (unset EFFICIENTSCN_SHARED_DATA to use tests/ct_data)")
    return CT_DATA


@functools.cache
def _made_data() -> Path:
    """The folder of this test run for the files made from others; removed when the run ends."""
    folder = Path(tempfile.mkdtemp(prefix="efficientscn-ct-data-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def ct_data_file(relative: str) -> Path:
    """A file of the test data by its path in the data folder. One the folder does not hold and that is made from
    others (the geometry variants, the DICOM series as NIfTI) is made on first use."""
    path = CT_DATA / relative
    if path.exists() or relative not in derivations(SHARED_CASES):
        return path
    return make_file(relative, SHARED_CASES, CT_DATA, _made_data())


def _require_reference(folder: Path, files: tuple[str, ...]) -> Path:
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        skip_or_fail(
            f"the original's files not found in {folder}: {', '.join(missing)} "
            f"(set EFFICIENTSCN_ORIGINAL to a clone of {ORIGINAL_URL})"
        )
    return folder


def require_original_models() -> Path:
    """The original's released models folder; skips the test if a file is missing, or fails it under CI."""
    files = ("localization/saved_model.pb", "tf_utils_module/saved_model.pb", "segmentation/variables/variables.index")
    return _require_reference(ORIGINAL_MODELS, files)


def require_original_segmentation_weights() -> Path:
    """The original's released models folder where it holds the segmentation SavedModel whole, as a full clone does.
    Where it holds only that model's variable index, skips the test, also under CI: no copy of the weights is at hand
    there, and every other test of the original's files still runs."""
    segmentation = require_original_models() / "segmentation"
    if not (segmentation / "saved_model.pb").is_file() or not any(segmentation.glob("variables/variables.data-*")):
        pytest.skip(
            f"{segmentation} holds the variable index of the original's segmentation model, not its graph and "
            f"weights (a full clone of {ORIGINAL_URL} has them)"
        )
    return ORIGINAL_MODELS


def require_original_setup() -> Path:
    """The original's setup folder; skips the test if a file is missing, or fails it under CI."""
    files = (
        "landmark_bb.csv",
        "cv/all_train.txt",
        *(f"cv/{k}/{part}.txt" for k in range(1, 5) for part in ("train", "test")),
    )
    return _require_reference(ORIGINAL_SETUP, files)


def imported_with_the_cli(models: Path, destination: Path, probe_case: str) -> Path:
    """`efficientscn import-original MODELS DESTINATION --probe CT` with a test case's CT, which must succeed; the
    destination."""
    from efficientscn.cli import main

    probe = shared_case(probe_case).image
    assert main(["import-original", str(models), str(destination), "--probe", str(probe), "-q"]) == 0
    return destination


def image_from_array(
    array: np.ndarray,
    spacing: tuple[float, float, float] = (1.5, 1.0, 2.5),
    origin: tuple[float, float, float] = (10.0, -20.0, 30.0),
    direction: tuple[float, ...] | None = None,
) -> sitk.Image:
    """A SimpleITK image of a zyx array with the given geometry (xyz); the defaults are deliberately not unit."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    return image


def impulse_ct(spacing_xyz: tuple[float, float, float], size: int = 41, value: int = 10_000) -> sitk.Image:
    """An int16 CT of zeros with one voxel of `value` HU at its centre, to read a smoothing's impulse response."""
    array = np.zeros((size, size, size), np.int16)
    array[size // 2, size // 2, size // 2] = value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    return image


def impulse_response_sigma_mm(image: sitk.Image) -> np.ndarray:
    """The standard deviation (x, y, z) in mm of a smoothed impulse: the square root of its second moments."""
    weights = sitk.GetArrayFromImage(image).astype(np.float64)
    axes = [np.arange(n) * s for n, s in zip(weights.shape, image.GetSpacing()[::-1], strict=True)]
    sigmas = []
    for axis, positions in enumerate(axes):
        profile = weights.sum(axis=tuple(a for a in range(3) if a != axis))
        mean = (profile * positions).sum() / profile.sum()
        sigmas.append(np.sqrt((profile * (positions - mean) ** 2).sum() / profile.sum()))
    return np.array(sigmas[::-1])


@dataclass(frozen=True)
class SharedCase:
    """One real case of the test data's cases.json."""

    id: str
    image: Path
    label: Path
    meta: dict


def shared_case(case_id: str) -> SharedCase:
    """A case by ID, after `require_shared_data`."""
    require_shared_data()
    meta = SHARED_CASES[case_id]
    return SharedCase(case_id, ct_data_file(meta["image"]), ct_data_file(meta["flare_label"]), meta)


# DICOM-SEG: what a reader makes of one (the test of the writer and the end-to-end test of predict)

_LABEL_OF_ORGAN = {name: value for value, name in ORGAN_NAMES.items()}


def dicom_headers(series: Path) -> list[pydicom.Dataset]:
    """The headers of a DICOM folder's files, in name order."""
    return [pydicom.dcmread(file, stop_before_pixels=True) for file in sorted(series.iterdir())]


def seg_label_volume(seg: highdicom.seg.Segmentation, grid: sitk.Image, source_slice: dict[str, int]) -> np.ndarray:
    """The label (z, y, x) a reader makes of the SEG on `grid`: each frame placed by its PlanePositionSequence, which
    must agree with the slice of the source instance it references (`source_slice`: SOPInstanceUID -> z), its
    segment mapped back to the FLARE value through the segment label (the organ name)."""
    value_of_segment = {int(item.SegmentNumber): _LABEL_OF_ORGAN[item.SegmentLabel] for item in seg.SegmentSequence}
    shared = seg.SharedFunctionalGroupsSequence[0]  # holds the segment of every frame when there is one segment
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    label = np.zeros(sitk.GetArrayViewFromImage(grid).shape, np.uint8)
    assert frames.shape[1:] == label.shape[1:]
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        index = np.asarray(grid.TransformPhysicalPointToContinuousIndex(position))
        assert index == pytest.approx(np.rint(index), abs=1e-3)
        assert index[:2] == pytest.approx([0, 0], abs=1e-3)
        z = int(np.rint(index[2]))
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert source_slice[source] == z
        mask = frame.astype(bool)
        assert not label[z][mask].any(), "segments overlap"
        identification = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        label[z][mask] = value_of_segment[int(identification[0].ReferencedSegmentNumber)]
    return label


def sop_instance_uid(ds: pydicom.Dataset) -> str:
    """An instance's SOPInstanceUID, or that of its file meta information where an anonymiser emptied it."""
    return str(ds.get("SOPInstanceUID") or ds.file_meta.MediaStorageSOPInstanceUID)


def seg_source_slices(headers: list[pydicom.Dataset], grid: sitk.Image) -> dict[str, int]:
    """SOPInstanceUID -> label z index of each source instance, from its position (not its file order)."""
    return {
        sop_instance_uid(ds): grid.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
        for ds in headers
    }


def hand_made_nifti(voxels: np.ndarray, order: str, *, version: int) -> bytes:
    """A minimal NIfTI-1 or NIfTI-2 file (`version`) of int16 `voxels` (z, y, x), 1 mm, built by hand in byte order
    `order` ("<" or ">"): SimpleITK writes only little-endian NIfTI-1."""
    dims = (3, *reversed(voxels.shape), 1, 1, 1, 1)
    if version == 1:
        header = bytearray(348)
        struct.pack_into(order + "i", header, 0, 348)
        struct.pack_into(order + "8h", header, 40, *dims)
        struct.pack_into(order + "2h", header, 70, 4, 16)  # datatype int16, bitpix 16
        struct.pack_into(order + "8f", header, 76, 1, 1, 1, 1, 0, 0, 0, 0)  # qfac and 1 mm spacing
        struct.pack_into(order + "2f", header, 108, 352.0, 1.0)  # vox_offset, scl_slope
        header[344:348] = b"n+1\0"
    else:
        header = bytearray(540)
        struct.pack_into(order + "i", header, 0, 540)
        header[4:12] = b"n+2\0\r\n\x1a\n"
        struct.pack_into(order + "2h", header, 12, 4, 16)
        struct.pack_into(order + "8q", header, 16, *dims)
        struct.pack_into(order + "8d", header, 104, 1, 1, 1, 1, 0, 0, 0, 0)
        struct.pack_into(order + "q", header, 168, 544)  # vox_offset
        struct.pack_into(order + "d", header, 176, 1.0)  # scl_slope
    return bytes(header) + bytes(4) + voxels.astype(order + "i2").tobytes()
