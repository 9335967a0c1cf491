"""Reading CTs and labels with every check a hospital's files need.

Every reader returns a 3-D, single-component SimpleITK image with an orthonormal direction, or raises
`InputError` naming the file and the problem. CTs come back as int16 HU, labels as uint8 in 0..4.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.errors import InputError, LabelMapGiven
from efficientscn.imaging.dicom_check import check_geometry_tags, check_pixel_data_lengths, check_slice_positions
from efficientscn.imaging.geometry import Grid, grid_of, is_orthonormal
from efficientscn.imaging.itk_path import itk_path
from efficientscn.imaging.metaimage_check import check_metaimage_decoded, check_metaimage_length
from efficientscn.imaging.names import image_suffix
from efficientscn.imaging.nifti_check import check_nifti_complete, check_nifti_header, nifti_states_orientation
from efficientscn.imaging.nifti_read import read_nifti_voxels
from efficientscn.labels import NUM_LABELS

logger = logging.getLogger(__name__)

INT16_RANGE = (int(np.iinfo(np.int16).min), int(np.iinfo(np.int16).max))


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


def itk_reason(error: RuntimeError) -> str:
    """The useful part of a SimpleITK exception: its ITK messages without source locations and object ids."""
    lines = str(error).splitlines()[1:] or [str(error)]
    text = " ".join(line.strip() for line in lines if line.strip())
    text = re.sub(r"(ITK|sitk)(::|\s)\s*ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", text, flags=re.IGNORECASE)
    return text[:400]


def dicom_series_files(folder: Path, readable: Path, notes: list[str] | None = None) -> list[str]:
    """The files of the largest DICOM series in a folder, as ITK reads them in `readable` (the folder, or a folder
    of links to its files with plain names).

    GDCM silently leaves out files it cannot parse, which turns a truncated slice into a missing one; a file
    that carries the DICOM signature but belongs to no series is therefore refused. Where the folder holds several
    series, which one is read is said once, naming each, where `notes` (the reading's warnings) is given.
    """
    entries = sorted(p for p in readable.iterdir() if not p.name.startswith("."))
    if not entries:
        raise InputError(f"{folder}: empty folder; expected a DICOM series")
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(readable))
    if not series_ids:
        raise InputError(f"{folder}: no DICOM series found in this folder")
    series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(readable), sid) for sid in series_ids}
    in_a_series = {Path(f).name for files in series.values() for f in files}
    unreadable = [p.name for p in entries if p.name not in in_a_series and _has_dicom_signature(p)]
    if unreadable:
        raise InputError(
            f"{folder}: {len(unreadable)} DICOM file(s) cannot be read (truncated or corrupt?): "
            + ", ".join(unreadable[:5])
        )
    chosen = max(series, key=lambda sid: len(series[sid]))
    if len(series) > 1 and notes is not None:
        others = "; ".join(_series_name(series[sid]) for sid in series if sid != chosen)
        chosen_name = _series_name(series[chosen])
        _note(notes, f"{folder}: {len(series)} DICOM series; reading the largest, {chosen_name}, not {others}")
    return list(series[chosen])


def _series_name(files: Sequence[str]) -> str:
    """How a user finds a series again: its number and description (from its first file), file count and UID."""
    header = sitk.ImageFileReader()
    header.SetFileName(files[0])
    try:
        header.ReadImageInformation()
    except RuntimeError:  # GDCM parsed it to group it; ITK may still balk at its image
        return f"series ({len(files)} files)"
    keys = ("0020|0011", "0008|103e", "0020|000e")  # SeriesNumber, SeriesDescription, SeriesInstanceUID
    tags = {key: header.GetMetaData(key).strip() for key in keys if header.HasMetaDataKey(key)}
    number = f"series {tags['0020|0011']}" if tags.get("0020|0011") else "series"
    description = f" {tags['0008|103e']!r}" if tags.get("0008|103e") else ""
    uid = f", {tags['0020|000e']}" if tags.get("0020|000e") else ""
    return f"{number}{description} ({len(files)} files{uid})"


def _note(notes: list[str] | None, message: str) -> None:
    """Log a warning about what reading assumed or chose, and keep it in `notes` where given (for the report)."""
    logger.warning("%s", message)
    if notes is not None:
        notes.append(message)


def is_dicom_file(path: Path) -> bool:
    """Whether a folder entry is a DICOM file: a `.dcm` name or the DICOM signature."""
    return path.suffix.lower() == ".dcm" or _has_dicom_signature(path)


def is_dicom_folder(folder: Path) -> bool:
    """Whether a folder holds one DICOM series to read: DICOM files and no image files (a folder of NIfTI CTs with
    a stray DICOM file is a folder of CTs)."""
    if not folder.is_dir():
        return False
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    return any(is_dicom_file(entry) for entry in entries) and not any(
        image_suffix(entry) and entry.is_file() for entry in entries
    )


def _has_dicom_signature(path: Path) -> bool:
    """Whether a file is a DICOM part-10 file other than a DICOMDIR index ("DICM" after the 128-byte preamble)."""
    if not path.is_file() or path.name.upper() == "DICOMDIR":
        return False
    with path.open("rb") as stream:
        return stream.read(132)[128:] == b"DICM"


def _undecodable_slices(folder: Path, files: Sequence[str]) -> str:
    """The slices of a series that cannot be decoded alone (a corrupt JPEG 2000 stream, say), with ITK's reason,
    found after the series as a whole failed; empty if each slice reads alone."""
    failures = []
    for name in files:
        try:
            sitk.ReadImage(name)
        except RuntimeError as error:
            failures.append(f"{Path(name).name} ({itk_reason(error)})")
    if not failures:
        return ""
    more = ", ..." if len(failures) > 3 else ""
    return f"{len(failures)} slice(s) cannot be decoded: {', '.join(failures[:3])}{more}"


def _check_3d_volume(path: Path | str, dimension: int, components: int, size: tuple[int, ...], pixel: str) -> None:
    """Reject what is not a single-component 3-D volume, before its voxels are read where possible."""
    if components != 1:
        raise InputError(f"{path}: {components}-component pixels ({pixel}); expected a single-channel CT or label")
    if dimension != 3:
        raise InputError(f"{path}: {dimension}-D image (size {size}); expected a 3-D CT or label")
    if min(size) < 2:
        thin = ", ".join(f"{count} along {axis}" for axis, count in zip("xyz", size, strict=True) if count < 2)
        flat = "no voxels" if min(size) == 0 else "a single plane of voxels"
        raise InputError(f"{path}: {flat} (size {size}: {thin}); expected a 3-D volume")


def _text_header(path: Path) -> str:
    """The text header of a MetaImage or NRRD file (its first 64 kB, up to a MetaImage's ElementDataFile line)."""
    with path.open("rb") as stream:
        return stream.read(1 << 16).split(b"ElementDataFile", 1)[0].decode("latin-1")


def _file_information(path: Path, readable: Path | str) -> sitk.ImageFileReader:
    """A reader of the file ITK reaches as `readable`, its header read; InputError naming `path` if it cannot be."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(readable))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{path}: not a readable image: {itk_reason(error)}") from error
    return reader


def _check_metaimage_spacing(path: Path) -> None:
    """Refuse a MetaImage header whose ElementSpacing is not positive and finite: ITK would make a negative one
    positive and flip the direction instead, a different grid from the one the file states."""
    match = re.search(r"^\s*ElementSpacing\s*=\s*(.+)$", _text_header(path), flags=re.MULTILINE)
    if match is None:
        return
    try:
        spacing = tuple(float(value) for value in match.group(1).split())
    except ValueError as error:
        raise InputError(f"{path}: unreadable ElementSpacing {match.group(1).strip()!r}") from error
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path}: spacing {spacing} (ElementSpacing) is not positive and finite")


def _check_geometry(path: Path | str, image: sitk.Image) -> None:
    spacing = image.GetSpacing()
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path}: spacing {spacing} is not positive and finite")
    if not all(np.isfinite(image.GetOrigin())):
        raise InputError(f"{path}: origin {image.GetOrigin()} is not finite")
    if not is_orthonormal(image.GetDirection()):
        raise InputError(f"{path}: direction {image.GetDirection()} is not orthonormal (a sheared or scaled grid)")


def _missing(path: Path) -> str:
    """Why a path that does not exist cannot be read: absent, or a link that leads nowhere or in a loop."""
    if path.is_symlink():
        return f"{path}: a broken link (to {os.readlink(path)}, which cannot be reached)"
    return f"{path}: no such file or folder"


def read_image(path: str | os.PathLike[str], notes: list[str] | None = None) -> sitk.Image:
    """Read a 3-D single-component image from a file (NIfTI, MHA, MHD, NRRD) or a DICOM series folder.

    The pixel type is left as stored. Raises `InputError` for a missing path, an empty folder, a file that is
    not an image or is truncated or corrupt, anything that is not a 3-D single-component volume, odd geometry
    (non-positive spacing, non-finite origin, non-orthonormal direction), and a DICOM series that does not say
    where its slices lie. What reading chose (the series read from a folder of several) is logged as a warning and
    added to `notes`.
    """
    path = Path(path)
    with itk_path(path) as readable:
        return _read_image(path, readable, [] if notes is None else notes)


def _read_image(path: Path, readable: Path, notes: list[str]) -> sitk.Image:
    """`read_image` of `path`, which ITK reads as `readable` (the same, or a link with a plain name)."""
    if path.is_dir():
        image = _read_dicom_series(path, readable, notes)
    else:
        if not path.exists():
            raise InputError(_missing(path))
        reader = _file_information(path, readable)
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        _check_3d_volume(path, reader.GetDimension(), reader.GetNumberOfComponents(), reader.GetSize(), pixel)
        suffix = image_suffix(path)
        nifti, metaimage = suffix in (".nii", ".nii.gz"), suffix in (".mha", ".mhd")
        image = None
        if nifti:
            check_nifti_header(path)
            image = read_nifti_voxels(path, reader)  # None where ITK changes the values stored: read below
        elif metaimage:
            _check_metaimage_spacing(path)
            check_metaimage_length(readable, path)  # ITK calls a truncated one "No such file or directory"
        if image is None:
            image = _execute(reader, path, nifti=nifti)
            if nifti:  # ITK's NIfTI reader pads a truncated file with zeros without a word
                check_nifti_complete(path, decoded=sitk.GetArrayViewFromImage(image))
            elif metaimage:  # and its MetaImage reader decodes a corrupt zlib stream into garbage
                check_metaimage_decoded(readable, sitk.GetArrayViewFromImage(image), path)
    _check_geometry(path, image)
    return image


def _execute(reader: sitk.ImageFileReader, path: Path, *, nifti: bool) -> sitk.Image:
    """The image ITK's `reader` (its header read) reads from the file at `path`; InputError naming it if it fails."""
    try:
        return reader.Execute()
    except RuntimeError as error:
        if nifti:
            check_nifti_complete(path)  # the precise reason, when it lies in the data
        raise InputError(f"{path}: image data cannot be read (truncated or corrupt?): {itk_reason(error)}") from error


def _read_dicom_series(folder: Path, readable: Path, notes: list[str]) -> sitk.Image:
    """The largest DICOM series of a folder as one volume, refused if a slice cannot be decoded or the series does
    not say (or contradicts) where its slices lie."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(dicom_series_files(folder, readable, notes))
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as error:
        culprits = _undecodable_slices(folder, reader.GetFileNames())
        raise InputError(f"{folder}: DICOM series cannot be read: {culprits or itk_reason(error)}") from error
    check_geometry_tags(folder, reader)
    check_slice_positions(folder, reader, image.GetSpacing()[2])
    check_pixel_data_lengths(folder, reader.GetFileNames())
    _check_3d_volume(
        folder,
        image.GetDimension(),
        image.GetNumberOfComponentsPerPixel(),
        image.GetSize(),
        image.GetPixelIDTypeAsString(),
    )
    return image


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without its voxels."""

    grid: Grid
    pixel_id: int
    pixel_type: str
    """SimpleITK's name of the pixel type, e.g. "8-bit unsigned integer"."""


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """The header of a 3-D image file (not a DICOM folder); InputError naming the file if it cannot be read."""
    with itk_path(Path(path)) as readable:
        reader = _file_information(Path(path), readable)
    if reader.GetDimension() != 3:
        raise InputError(f"{path}: {reader.GetDimension()}-D image; expected a 3-D volume")
    grid = Grid(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())  # type: ignore[arg-type]
    return ImageHeader(grid, reader.GetPixelID(), sitk.GetPixelIDValueAsString(reader.GetPixelID()))


def spacing_is_stored(path: str | os.PathLike[str]) -> bool:
    """Whether a CT file or DICOM folder evidently stores its spacing, rather than leaving readers to assume 1 mm:
    a NIfTI header with a qform or sform, a MetaImage with ElementSpacing or ElementSize, an NRRD with spacings or
    space directions, a DICOM series with Pixel Spacing. Unknown formats count as storing it."""
    path = Path(path)
    suffix = image_suffix(path)
    if path.is_dir():
        with itk_path(path) as readable:
            return _file_information(path, dicom_series_files(path, readable)[0]).HasMetaDataKey("0028|0030")
    if suffix in (".nii", ".nii.gz"):
        return nifti_states_orientation(path)
    text = _text_header(path)
    if suffix in (".mha", ".mhd"):
        return re.search(r"^\s*Element(Spacing|Size)\s*=", text, flags=re.MULTILINE) is not None
    if suffix in (".nrrd", ".nhdr"):
        return re.search(r"^(spacings|space directions)\s*:", text, flags=re.MULTILINE) is not None
    return True


def header_size(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The size (x, y, z) an image file or DICOM folder declares, read without its voxels, so that a scan too large
    to hold can be refused before it is read. Raises `InputError` for what `read_image` would refuse as unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(_missing(path))
    with itk_path(path) as readable:
        if path.is_dir():
            files = dicom_series_files(path, readable)
            size = tuple(int(s) for s in _file_information(path, files[0]).GetSize())
            return (*size[:2], len(files))
        return tuple(int(s) for s in _file_information(path, readable).GetSize())


def _scalar_array(path: Path | str, image: sitk.Image) -> np.ndarray:
    """The voxels of a real-valued image, zyx; complex pixel types are refused."""
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputError(f"{path}: complex pixel type ({image.GetPixelIDTypeAsString()}); expected real values")
    return sitk.GetArrayViewFromImage(image)


def read_ct(path: str | os.PathLike[str], notes: list[str] | None = None) -> sitk.Image:
    """Read a CT as int16 HU, geometry kept (size, origin, spacing, direction as stored); see `as_int16_ct`.

    What reading had to assume or choose (a NIfTI's orientation that it does not state, the series read from a
    folder of several) is logged as a warning and added to `notes`.
    """
    path = Path(path)
    image = read_image(path, notes)
    if image_suffix(path) in (".nii", ".nii.gz") and not nifti_states_orientation(path):
        _note(notes, f"{path}: {NO_ORIENTATION}")
    return _int16_ct(path, image)


NO_ORIENTATION = (
    "NIfTI without qform and sform: where the patient lies is unknown; its voxel axes are assumed to run to the "
    "patient's left, posterior and superior (LPS) from an origin of 0, and the label is wrong (mirrored or rotated) "
    "if they do not"
)
"""What is assumed of a NIfTI CT that states no orientation (ITK's reading of it), said in the log and the report."""


def as_int16_ct(image: sitk.Image, source: str = "image") -> sitk.Image:
    """A CT already in memory as `read_ct` gives a file's: checked as `read_image` checks a file (a 3-D
    single-component volume, positive spacing, orthonormal direction), then converted (see `_int16_ct`);
    `source` names it in messages."""
    _check_3d_volume(
        source,
        image.GetDimension(),
        image.GetNumberOfComponentsPerPixel(),
        image.GetSize(),
        image.GetPixelIDTypeAsString(),
    )
    _check_geometry(source, image)
    return _int16_ct(source, image)


def _int16_ct(source: Path | str, image: sitk.Image) -> sitk.Image:
    """`image` as int16 HU, geometry kept: other integer and float pixel types are rounded and clipped to the int16
    range (never wrapped around, where the original's cast wraps: docs/fidelity.md #40), with a warning when
    clipping changes values. Non-finite values are refused, and so is a label map (integer values within 0-4)."""
    values = _scalar_array(source, image)
    if values.dtype.kind in "iu":
        _refuse_label_map(source, values)
    if image.GetPixelID() == sitk.sitkInt16:
        return image
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise InputError(f"{source}: image contains NaN or infinite values")
        values = np.rint(values)
    low, high = INT16_RANGE
    clipped = int(np.count_nonzero((values < low) | (values > high)))
    if clipped:
        logger.warning("%s: %d voxels outside the int16 range were clipped to [%d, %d] HU", source, clipped, low, high)
    converted = sitk.GetImageFromArray(np.clip(values, low, high).astype(np.int16))
    converted.CopyInformation(image)
    return converted


def _refuse_label_map(path: Path | str, values: np.ndarray) -> None:
    """InputError if integer voxels hold only FLARE label values (0-4, at least two of them): a label map given as
    a CT, as when the input and output folders are swapped. A CT has air, far below 0 HU (or, stored unsigned with
    an offset, far above 4)."""
    low, high = int(values.min()), int(values.max())
    if 0 <= low < high < NUM_LABELS:
        raise LabelMapGiven(
            f"{path}: holds only the values {low}-{high}: a label map, not a CT (are the input and output swapped?)"
        )


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
