"""Checks of a DICOM series that GDCM does not make, after ITK has read it: that every file says where it lies, that
the slices are evenly spaced along their normal, and that each slice's uncompressed pixel data has the length its
header needs (GDCM reads a short one into a slice with garbage rows, without a word)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from efficientscn.errors import InputError

if TYPE_CHECKING:
    import pydicom
    import SimpleITK as sitk

DICOM_GEOMETRY_TAGS = {
    "0020|0032": "ImagePositionPatient (0020,0032)",
    "0020|0037": "ImageOrientationPatient (0020,0037)",
    "0028|0030": "PixelSpacing (0028,0030)",
}
"""The type 1 tags that place a CT slice in space. Without them ITK guesses (1 mm pixels, slices 1 mm apart or
spaced from whichever positions there are, axes as the identity): a series lacking one is refused."""


def check_geometry_tags(folder: Path, reader: sitk.ImageSeriesReader) -> None:
    """Refuse a series in which any file lacks a tag that places it in space (anonymisers drop them), naming the
    tags and files: a label and organ volumes on a guessed grid would look as right as true ones."""
    files = [Path(name).name for name in reader.GetFileNames()]
    lacking = {
        tag: sorted(
            name
            for index, name in enumerate(files)
            if not reader.HasMetaDataKey(index, tag) or not reader.GetMetaData(index, tag).strip()  # or empty
        )
        for tag in DICOM_GEOMETRY_TAGS
    }
    missing = [
        f"{DICOM_GEOMETRY_TAGS[tag]} in {len(names)} of {len(files)} files ({', '.join(names[:3])}"
        f"{', ...' if len(names) > 3 else ''})"
        for tag, names in lacking.items()
        if names
    ]
    if missing:
        raise InputError(
            f"{folder}: DICOM series without {'; without '.join(missing)}: where its voxels lie is unknown, and a "
            "label on a guessed grid would have wrong volumes; export the series with its geometry"
        )


def check_slice_positions(folder: Path, reader: sitk.ImageSeriesReader, slice_spacing_mm: float) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing slice would silently stretch the volume)."""
    files = reader.GetFileNames()
    try:
        positions = np.array([_numbers(reader.GetMetaData(i, "0020|0032"), 3) for i in range(len(files))])
        row_col = np.array(_numbers(reader.GetMetaData(0, "0020|0037"), 6))
    except ValueError as error:
        raise InputError(f"{folder}: unreadable slice geometry ({error})") from error
    if len(positions) < 3:
        return
    gaps = np.diff(positions @ np.cross(row_col[:3], row_col[3:]))
    if np.abs(np.abs(gaps) - slice_spacing_mm).max() > 0.01 * slice_spacing_mm + 1e-3:
        raise InputError(
            f"{folder}: slice positions are not evenly spaced (gaps {np.round(np.abs(gaps), 3).min()} to "
            f"{np.round(np.abs(gaps), 3).max()} mm): missing or duplicate slices?"
        )


def _numbers(value: str, count: int) -> list[float]:
    """The `count` finite numbers of a multi-valued DICOM decimal string; ValueError saying what it holds if not."""
    try:
        numbers = [float(v) for v in value.split("\\")]
    except ValueError:
        numbers = []
    if len(numbers) != count or not all(np.isfinite(numbers)):
        raise ValueError(f"{value.strip()!r} where {count} numbers belong")
    return numbers


def check_pixel_data_lengths(folder: Path, files: Sequence[str]) -> None:
    """Refuse a series in which a slice's uncompressed Pixel Data holds another number of bytes than Rows x Columns x
    samples x bits allocated (x frames) need, naming the slices. Its header only is read (its pixel data is not).
    Compressed (encapsulated) pixel data has no length to compare: its decoder's errors fail the read instead."""
    import pydicom  # here: a quarter of a second to import, for DICOM series only

    wrong = []
    for name in files:
        dataset = pydicom.dcmread(name, defer_size=1024)
        if dataset.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian).is_encapsulated:
            continue
        element = dataset.get_item(0x7FE00010, keep_deferred=True)
        if element is None or element.length == 0xFFFFFFFF:
            continue  # no pixel data (ITK would not have read it as an image) or encapsulated after all
        needed = _pixel_bytes(dataset)
        if element.length not in (needed, needed + needed % 2):  # an odd length is padded to an even one
            wrong.append(f"{Path(name).name} ({element.length} bytes where its header needs {needed})")
    if wrong:
        more = ", ..." if len(wrong) > 3 else ""
        raise InputError(
            f"{folder}: {len(wrong)} slice(s) whose pixel data does not have the length their header needs: "
            f"{', '.join(wrong[:3])}{more}"
        )


def _pixel_bytes(dataset: pydicom.Dataset) -> int:
    """The bytes of uncompressed pixel data a DICOM header describes."""
    bits = (
        int(dataset.Rows)
        * int(dataset.Columns)
        * int(dataset.get("SamplesPerPixel", 1))
        * int(dataset.get("NumberOfFrames", 1) or 1)
        * int(dataset.BitsAllocated)
    )
    return (bits + 7) // 8
