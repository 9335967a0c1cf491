"""DICOM series made for the tests of the DICOM outputs: a CT image written one file per slice, an anonymised copy."""

from __future__ import annotations

import locale
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_dicom_series(image: sitk.Image, folder: Path, *, patient: str = "Phantom^Test") -> None:
    """A CT series of `image`, one file per z slice, in shuffled file order, with the position of each slice
    (SimpleITK's "Dicom Series From Array" example): any direction, oblique or flipped, as the image has it."""
    folder.mkdir(parents=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    shared = {
        "0008|0016": CT_IMAGE_STORAGE,
        "0008|0060": "CT",
        "0010|0010": patient,
        "0010|0020": "PHANTOM1",
        "0020|000d": generate_uid(),
        "0020|000e": generate_uid(),
        "0020|0052": generate_uid(),
        "0020|0037": "\\".join(f"{v:.12g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": f"{image.GetSpacing()[2]:.12g}",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    order = np.random.default_rng(0).permutation(image.GetDepth())
    process_locale = locale.setlocale(locale.LC_ALL)
    try:
        for file_number, z in enumerate(order):
            plane = image[:, :, int(z)]
            for key, value in shared.items():
                plane.SetMetaData(key, value)
            position = image.TransformIndexToPhysicalPoint((0, 0, int(z)))
            plane.SetMetaData("0020|0032", "\\".join(f"{v:.12g}" for v in position))
            plane.SetMetaData("0020|0013", str(int(z) + 1))
            plane.SetMetaData("0008|0018", generate_uid())
            writer.SetFileName(str(folder / f"slice{file_number:03d}.dcm"))
            writer.Execute(plane)
    finally:  # GDCM's DICOM writer leaves the process in the C locale, where Python reads text as ASCII
        locale.setlocale(locale.LC_ALL, process_locale)


def anonymised_copy(series: Path, folder: Path, removed: Iterable[str], *, meta_uids: bool = True) -> Path:
    """A copy of the DICOM folder `series` in `folder` without the attributes `removed` (also emptied from the file
    meta information when `meta_uids` is False: then neither the instances nor their files carry a SOP UID)."""
    folder.mkdir(parents=True)
    removed = tuple(removed)
    for file in sorted(series.iterdir()):
        ds = pydicom.dcmread(file)
        for keyword in removed:
            if keyword in ds:
                delattr(ds, keyword)
        if not meta_uids:
            ds.file_meta.MediaStorageSOPInstanceUID = ""
        ds.save_as(folder / file.name)
    return folder
