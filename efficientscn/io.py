"""Reading CTs and labels, canonical (LPS) orientation and its exact inverse, atomic image writing.

Every reader returns a 3-D, single-component SimpleITK image with an orthonormal direction, or raises
`InputError` naming the file and the problem. CTs come back as int16 HU, labels as uint8 in 0..4.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.atomic import atomic_output
from efficientscn.errors import InputError
from efficientscn.geometry import Grid, is_orthonormal
from efficientscn.labels import NUM_LABELS
from efficientscn.nifti_check import check_nifti_complete

logger = logging.getLogger(__name__)

# ITK prints warnings about harmless metadata straight to stderr; problems reach us as exceptions instead.
sitk.ProcessObject.SetGlobalWarningDisplay(False)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
"""File endings read as images; a folder is read as a DICOM series."""

WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
"""Single-file formats, the only ones that can be written atomically by one rename."""

CANONICAL_ORIENTATION = "LPS"
"""Processing orientation: index axes run towards patient left, posterior, superior (ITK's identity direction)."""

INT16_RANGE = (int(np.iinfo(np.int16).min), int(np.iinfo(np.int16).max))


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
    return stem[: -len("_0000")] if stem.endswith("_0000") else stem


def is_image_path(path: Path) -> bool:
    """Whether a folder entry is something `read_ct` reads: an image file or a folder (a DICOM series)."""
    return path.is_dir() or (path.is_file() and image_suffix(path) != "")


def grid_of(image: sitk.Image) -> Grid:
    """The geometry of a 3-D SimpleITK image."""
    return Grid(
        size=tuple(int(s) for s in image.GetSize()),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in image.GetSpacing()),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in image.GetDirection()),
    )


def require_same_grid(
    image: sitk.Image, path: str | os.PathLike[str], reference: sitk.Image, reference_description: str
) -> None:
    """Raise `InputError` if `image` (read from `path`) does not lie on the grid of `reference`.

    The message names `path`, then `reference_description` (for example "the reference /data/x.nii.gz"), then each
    differing property with the image's value first.
    """
    mismatch = grid_of(image).differences(grid_of(reference))
    if mismatch:
        raise InputError(f"{path}: not on the grid of {reference_description}: {'; '.join(mismatch)}")


def _itk_reason(error: RuntimeError) -> str:
    """The useful part of a SimpleITK exception: its ITK messages without source locations and object ids."""
    lines = str(error).splitlines()[1:] or [str(error)]
    text = " ".join(line.strip() for line in lines if line.strip())
    text = re.sub(r"(ITK|sitk)(::|\s)\s*ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", text, flags=re.IGNORECASE)
    return text[:400]


def _dicom_series_files(folder: Path) -> list[str]:
    """The files of the largest DICOM series in a folder (warning if there are several).

    GDCM silently leaves out files it cannot parse, which turns a truncated slice into a missing one; a file
    that carries the DICOM signature but belongs to no series is therefore refused.
    """
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise InputError(f"{folder}: empty folder; expected a DICOM series")
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"{folder}: no DICOM series found in this folder")
    series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    in_a_series = {Path(f).name for files in series.values() for f in files}
    unreadable = [p.name for p in entries if p.name not in in_a_series and _has_dicom_signature(p)]
    if unreadable:
        raise InputError(
            f"{folder}: {len(unreadable)} DICOM file(s) cannot be read (truncated or corrupt?): "
            + ", ".join(unreadable[:5])
        )
    chosen = max(series, key=lambda sid: len(series[sid]))
    if len(series) > 1:
        logger.warning(
            "%s: %d DICOM series; reading the largest (%s, %d files)", folder, len(series), chosen, len(series[chosen])
        )
    return list(series[chosen])


def is_dicom_folder(folder: Path) -> bool:
    """Whether a folder holds DICOM files itself (one series to read), rather than other images or folders."""
    return folder.is_dir() and any(
        entry.suffix.lower() == ".dcm" or _has_dicom_signature(entry) for entry in folder.iterdir()
    )


def _has_dicom_signature(path: Path) -> bool:
    """Whether a file is a DICOM part-10 file other than a DICOMDIR index ("DICM" after the 128-byte preamble)."""
    if not path.is_file() or path.name.upper() == "DICOMDIR":
        return False
    with path.open("rb") as stream:
        return stream.read(132)[128:] == b"DICM"


def _check_slice_positions(folder: Path, reader: sitk.ImageSeriesReader, slice_spacing_mm: float) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing slice would silently stretch the volume)."""
    try:
        positions = np.array(
            [
                [float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]
                for i in range(len(reader.GetFileNames()))
            ]
        )
        row_col = np.array([float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")])
    except (RuntimeError, ValueError):
        return  # no patient position tags: nothing to compare
    if len(positions) < 3:
        return
    gaps = np.diff(positions @ np.cross(row_col[:3], row_col[3:]))
    if np.abs(np.abs(gaps) - slice_spacing_mm).max() > 0.01 * slice_spacing_mm + 1e-3:
        raise InputError(
            f"{folder}: slice positions are not evenly spaced (gaps {np.round(np.abs(gaps), 3).min()} to "
            f"{np.round(np.abs(gaps), 3).max()} mm): missing or duplicate slices?"
        )


def _check_3d_volume(path: Path, dimension: int, components: int, size: tuple[int, ...], pixel: str) -> None:
    """Reject what is not a single-component 3-D volume, before its voxels are read where possible."""
    if components != 1:
        raise InputError(f"{path}: {components}-component pixels ({pixel}); expected a single-channel CT or label")
    if dimension != 3:
        raise InputError(f"{path}: {dimension}-D image (size {size}); expected a 3-D CT or label")
    if min(size) < 2:
        raise InputError(f"{path}: 2-D image (size {size}, a single slice); expected a 3-D volume")


def _check_geometry(path: Path, image: sitk.Image) -> None:
    spacing = image.GetSpacing()
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path}: spacing {spacing} is not positive and finite")
    if not is_orthonormal(image.GetDirection()):
        raise InputError(f"{path}: direction {image.GetDirection()} is not orthonormal (a sheared or scaled grid)")


def read_image(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a 3-D single-component image from a file (NIfTI, MHA, MHD, NRRD) or a DICOM series folder.

    The pixel type is left as stored. Raises `InputError` for a missing path, an empty folder, a file that is
    not an image or is truncated, anything that is not a 3-D single-component volume, and odd geometry
    (non-positive spacing, non-orthonormal direction).
    """
    path = Path(path)
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(_dicom_series_files(path))
        reader.MetaDataDictionaryArrayUpdateOn()
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise InputError(f"{path}: DICOM series cannot be read: {_itk_reason(error)}") from error
        _check_slice_positions(path, reader, image.GetSpacing()[2])
        _check_3d_volume(
            path,
            image.GetDimension(),
            image.GetNumberOfComponentsPerPixel(),
            image.GetSize(),
            image.GetPixelIDTypeAsString(),
        )
    else:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise InputError(f"{path}: not a readable image: {_itk_reason(error)}") from error
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        _check_3d_volume(path, reader.GetDimension(), reader.GetNumberOfComponents(), reader.GetSize(), pixel)
        if image_suffix(path) in (".nii", ".nii.gz"):
            check_nifti_complete(path)  # ITK's NIfTI reader pads a truncated file with zeros without a word
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise InputError(
                f"{path}: image data cannot be read (truncated or corrupt?): {_itk_reason(error)}"
            ) from error
    _check_geometry(path, image)
    return image


def header_size(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The size (x, y, z) an image file or DICOM folder declares, read without its voxels, so that a scan too large
    to hold can be refused before it is read. Raises `InputError` for what `read_image` would refuse as unreadable.
    """
    path = Path(path)
    reader = sitk.ImageFileReader()
    if path.is_dir():
        files = _dicom_series_files(path)
        reader.SetFileName(files[0])
    elif path.exists():
        reader.SetFileName(str(path))
    else:
        raise InputError(f"{path}: no such file or folder")
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{path}: not a readable image: {_itk_reason(error)}") from error
    size = tuple(int(s) for s in reader.GetSize())
    return (*size[:2], len(files)) if path.is_dir() else size


def _scalar_array(path: Path, image: sitk.Image) -> np.ndarray:
    """The voxels of a real-valued image, zyx; complex pixel types are refused."""
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputError(f"{path}: complex pixel type ({image.GetPixelIDTypeAsString()}); expected real values")
    return sitk.GetArrayViewFromImage(image)


def read_ct(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a CT as int16 HU, geometry kept (size, origin, spacing, direction as stored).

    Other integer and float pixel types are rounded and clipped to the int16 range (never wrapped around, where the
    original's cast wraps: docs/fidelity.md #40), with a warning when clipping changes values. Non-finite values are
    refused.
    """
    path = Path(path)
    image = read_image(path)
    if image.GetPixelID() == sitk.sitkInt16:
        return image
    values = _scalar_array(path, image)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise InputError(f"{path}: image contains NaN or infinite values")
        values = np.rint(values)
    low, high = INT16_RANGE
    clipped = int(np.count_nonzero((values < low) | (values > high)))
    if clipped:
        logger.warning("%s: %d voxels outside the int16 range were clipped to [%d, %d] HU", path, clipped, low, high)
    converted = sitk.GetImageFromArray(np.clip(values, low, high).astype(np.int16))
    converted.CopyInformation(image)
    return converted


def read_label(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a FLARE label map as uint8 (0 background, 1 liver, 2 kidney, 3 spleen, 4 pancreas).

    Any integer or integral float pixel type is accepted; other values (fractions, negatives, labels above 4)
    raise `InputError`.
    """
    path = Path(path)
    image = read_image(path)
    values = _scalar_array(path, image)
    if (
        image.GetPixelID() != sitk.sitkUInt8
        and values.dtype.kind == "f"
        and not np.array_equal(values, np.rint(values))
    ):
        raise InputError(f"{path}: label map has non-integer values ({image.GetPixelIDTypeAsString()})")
    if values.min() < 0 or values.max() >= NUM_LABELS:
        present = np.unique(values)
        unexpected = present[(present < 0) | (present >= NUM_LABELS)]
        raise InputError(
            f"{path}: label values {unexpected[:8].tolist()}{' and more' if unexpected.size > 8 else ''} outside "
            f"0..{NUM_LABELS - 1} (FLARE convention: "
            "0 background, 1 liver, 2 kidney, 3 spleen, 4 pancreas)"
        )
    if image.GetPixelID() == sitk.sitkUInt8:
        return image
    converted = sitk.GetImageFromArray(values.astype(np.uint8))
    converted.CopyInformation(image)
    return converted


@dataclass(frozen=True)
class Reorientation:
    """How an image's voxels were permuted and flipped into the canonical LPS orientation, and the way back.

    `permute_order_xyz[i]` is the input axis that became canonical axis i; `flip_axes_xyz[i]` says whether
    canonical axis i was then reversed (both as SimpleITK's DICOMOrientImageFilter reports them).
    `original_grid` is the input's exact geometry, given back unchanged by `to_original_image`.
    """

    permute_order_xyz: tuple[int, int, int]
    flip_axes_xyz: tuple[bool, bool, bool]
    original_grid: Grid

    @property
    def canonical_spacing_xyz(self) -> tuple[float, float, float]:
        """The voxel spacing along the canonical axes."""
        spacing = self.original_grid.spacing
        return tuple(spacing[axis] for axis in self.permute_order_xyz)  # type: ignore[return-value]

    def _numpy_axes(self) -> tuple[list[int], tuple[int, ...]]:
        """The transpose (input array axis per canonical array axis) and the flipped canonical array axes, zyx."""
        transpose = [2 - self.permute_order_xyz[2 - axis] for axis in range(3)]
        flipped = tuple(axis for axis in range(3) if self.flip_axes_xyz[2 - axis])
        return transpose, flipped

    def to_canonical_array(self, array_zyx: np.ndarray) -> np.ndarray:
        """An array on the input grid moved onto the canonical grid (a view where possible)."""
        transpose, flipped = self._numpy_axes()
        return np.flip(np.transpose(array_zyx, transpose), axis=flipped)

    def to_original_array(self, array_zyx: np.ndarray) -> np.ndarray:
        """An array on the canonical grid moved back onto the input grid (a view where possible)."""
        transpose, flipped = self._numpy_axes()
        return np.transpose(np.flip(array_zyx, axis=flipped), np.argsort(transpose))

    def to_original_image(self, array_zyx: np.ndarray) -> sitk.Image:
        """An image on the input's exact grid (size, origin, spacing, direction) from an array on the canonical grid."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.to_original_array(array_zyx)))
        expected = self.original_grid.size
        if image.GetSize() != expected:
            raise ValueError(f"array of size {image.GetSize()} (xyz) after reorientation, expected {expected}")
        image.SetSpacing(self.original_grid.spacing)
        image.SetOrigin(self.original_grid.origin)
        image.SetDirection(self.original_grid.direction)
        return image


def _canonical_orienter() -> sitk.DICOMOrientImageFilter:
    orienter = sitk.DICOMOrientImageFilter()
    orienter.SetDesiredCoordinateOrientation(CANONICAL_ORIENTATION)
    return orienter


def _reorientation(orienter: sitk.DICOMOrientImageFilter, image: sitk.Image) -> Reorientation:
    return Reorientation(
        permute_order_xyz=tuple(int(a) for a in orienter.GetPermuteOrder()),  # type: ignore[arg-type]
        flip_axes_xyz=tuple(bool(f) for f in orienter.GetFlipAxes()),  # type: ignore[arg-type]
        original_grid=grid_of(image),
    )


def to_canonical(image: sitk.Image) -> tuple[sitk.Image, Reorientation]:
    """The image in canonical LPS orientation (axes permuted and flipped, voxels unchanged) and how to undo it.

    An axis-aligned image gets the identity direction; an oblique one keeps the rotation left after the nearest
    permutation, and processing treats its axes as the nearest patient axes, as the original does.
    """
    orienter = _canonical_orienter()
    canonical = orienter.Execute(image)
    return canonical, _reorientation(orienter, image)


def canonical_reorientation(image: sitk.Image) -> Reorientation:
    """How `to_canonical` reorients `image`, found without copying its voxels (it depends on the direction only).

    `Reorientation.to_canonical_array` then gives the canonical voxels as a view of the image's array.
    """
    probe = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    probe.SetDirection(image.GetDirection())
    orienter = _canonical_orienter()
    orienter.Execute(probe)
    return _reorientation(orienter, image)


def resample_onto(image: sitk.Image, grid: Grid, interpolator: int, default: float) -> sitk.Image:
    """`image` resampled onto `grid` (same physical space, `interpolator` e.g. sitk.sitkLinear), keeping its pixel
    type; points outside the image get `default`."""
    reference = sitk.Image([int(s) for s in grid.size], sitk.sitkUInt8)
    reference.SetSpacing(grid.spacing)
    reference.SetOrigin(grid.origin)
    reference.SetDirection(grid.direction)
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, image.GetPixelID())


def write_image_atomic(
    image: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write an image so that `path` either keeps its old content or holds the complete new file, never a part.

    Single-file formats only (see WRITABLE_SUFFIXES). An existing `path` raises FileExistsError unless
    `overwrite` is set. Returns the path written.
    """
    path = Path(path)
    suffix = next((s for s in WRITABLE_SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{path}: cannot write atomically; use one of {', '.join(WRITABLE_SUFFIXES)}")
    with atomic_output(path, suffix=path.name[-len(suffix) :], overwrite=overwrite) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
    return path


def write_label(label: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a uint8 label map atomically and compressed (see `write_image_atomic`)."""
    if label.GetPixelID() != sitk.sitkUInt8:
        raise TypeError(f"{path}: label maps are written as uint8, got {label.GetPixelIDTypeAsString()}")
    return write_image_atomic(label, path, overwrite=overwrite, compress=True)
