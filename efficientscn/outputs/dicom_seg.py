"""A label map as a DICOM Segmentation object (DICOM-SEG) of the DICOM series its CT was read from.

A PACS or viewer (3D Slicer, OHIF) shows a SEG over the series it references, one coded segment per organ. The SEG
references exactly the instances `read_image` read (the largest series of the folder), and each of its frames
names the source instance whose plane it covers, found by position (never by file order; `dicom_source`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from efficientscn.atomic import atomic_output
from efficientscn.errors import InputError
from efficientscn.labels import ORGAN_CATEGORY, ORGAN_NAMES, ORGANS
from efficientscn.outputs.dicom_source import (
    CONTENT_LABEL,
    MANUFACTURER,
    MODEL_NAME,
    SERIES_DESCRIPTION,
    failures_named,
    label_values,
    organs_present,
    read_source_series,
)
from efficientscn.outputs.existing import declares_sop_class, dicom_read_errors, read_dicom_output
from efficientscn.versions import __version__

ANATOMICAL_STRUCTURE = Code(ORGAN_CATEGORY[0], "SCT", ORGAN_CATEGORY[1])
"""The property category of every segment: SCT 91723000 "Anatomical Structure" (DICOM CID 7150)."""

ARTIFICIAL_INTELLIGENCE: Code = codes.cid7162.ArtificialIntelligence
"""The algorithm family: DCM 123110 "Artificial Intelligence" (DICOM CID 7162)."""

SEG_SERIES_NUMBER = 300
SEG_DEVICE_SERIAL_NUMBER = "none"


def write_dicom_seg(series: Path, label: sitk.Image, path: Path, *, overwrite: bool = False) -> Path:
    """Write the DICOM-SEG of `label` over the DICOM series in folder `series`, atomically, to `path`.

    series: the DICOM folder the CT was read from with `read_image` (its largest series is the one referenced).
    label: uint8 label map, values 0..4 (0 background, 1 liver, 2 kidney, 3 spleen, 4 pancreas), on the exact
    grid ITK reads that series on (size, spacing, origin, direction, xyz).
    path: the SEG file to write (e.g. `<output>/<case>.seg.dcm`).

    The SEG is BINARY (bit-packed, explicit VR little endian) with four segments, numbered by their FLARE label
    values (1 liver, 2 kidney, 3 spleen, 4 pancreas) whatever organs the label holds: an organ not found is a
    segment without frames, so that a reader that turns segment numbers into label values (a multi-class reader)
    gives back the label map. Each segment's label is the organ name (`ORGAN_NAMES`), its property type the
    organ's SNOMED CT code, its colour the organ's (`labels.ORGANS`). Empty frames are left out. What an
    anonymised series lacks is filled in memory only (`dicom_source.read_source_series`).

    Raises InputError naming the folder when the label has no organ (a SEG without any frame), is not a uint8
    0..4 map, or does not lie on the grid of the series' instances (count, rows/columns, spacing, orientation,
    positions); InputError naming `path` when highdicom cannot build a SEG of the series' headers;
    FileExistsError if `path` exists and `overwrite` is not set (the file is untouched). Returns `path`.
    """
    series, path = Path(series), Path(path)
    values = label_values(series, label)
    present = organs_present(values)
    if not present:
        raise InputError(f"{series}: no organ in the label: no DICOM-SEG written (a SEG needs at least one frame)")
    with atomic_output(path, suffix=path.suffix, overwrite=overwrite) as temporary:
        sources = read_source_series(series, label, output_kind="DICOM-SEG")
        with failures_named(path, "DICOM-SEG", "highdicom", series):
            with warnings.catch_warnings():
                # the patient's name is the source's, copied as it is: its form is not ours to warn about
                warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
                seg = highdicom.seg.Segmentation(
                    source_images=sources,
                    pixel_array=values,  # frames in slice order, as the sources; label values are segment numbers
                    segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
                    segment_descriptions=[_segment_description(value) for value in ORGAN_NAMES],
                    series_instance_uid=highdicom.UID(),
                    series_number=SEG_SERIES_NUMBER,
                    sop_instance_uid=highdicom.UID(),
                    instance_number=1,
                    manufacturer=MANUFACTURER,
                    manufacturer_model_name=MODEL_NAME,
                    software_versions=__version__,
                    device_serial_number=SEG_DEVICE_SERIAL_NUMBER,
                    content_label=CONTENT_LABEL,
                    content_description=f"EfficientSCN: {', '.join(ORGAN_NAMES[v] for v in present)}",
                    series_description=SERIES_DESCRIPTION,
                    omit_empty_frames=True,
                )
            seg.save_as(temporary, enforce_file_format=True)
    return path


def _segment_description(value: int) -> highdicom.seg.SegmentDescription:
    """The segment of organ label `value`, numbered `value`: its name, SNOMED CT code, colour and the algorithm that
    made it."""
    description = highdicom.seg.SegmentDescription(
        segment_number=value,
        segment_label=ORGAN_NAMES[value],
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=Code(ORGANS[value].snomed_code, "SCT", ORGANS[value].snomed_meaning),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name=MODEL_NAME, family=ARTIFICIAL_INTELLIGENCE, version=__version__
        ),
        display_color=highdicom.color.CIELabColor.from_rgb(*ORGANS[value].colour_rgb),
    )
    description.SegmentDescription = f"FLARE label {value}"
    return description


SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
"""The SOP class of a DICOM Segmentation object."""


def dicom_seg_problem(path: Path) -> str | None:
    """Why the file at `path` cannot count as a finished DICOM-SEG of this tool, or None if it can: it must read
    whole (its frames included) as a Segmentation object with at least one segment."""
    dataset = read_dicom_output(path, SEGMENTATION_STORAGE, "SEG", "a DICOM Segmentation object")
    if isinstance(dataset, str):
        return dataset
    try:
        if not dataset.get("SegmentSequence"):
            return "a DICOM-SEG without segments"
        frames = int(dataset.NumberOfFrames) * int(dataset.Rows) * int(dataset.Columns)
        if len(dataset.PixelData) < (frames + 7) // 8:  # BINARY: one bit per pixel
            return f"truncated: {len(dataset.PixelData)} bytes of pixel data for {frames} pixels"
    except dicom_read_errors() as error:
        return f"not readable as a DICOM Segmentation object ({type(error).__name__}: {error})"
    return None


def is_dicom_seg_file(path: Path) -> bool:
    """Whether the file at `path` declares itself a DICOM Segmentation object: one this tool may replace."""
    return declares_sop_class(path, SEGMENTATION_STORAGE)
