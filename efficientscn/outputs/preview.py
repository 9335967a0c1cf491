"""Quick-look PNG of a segmented CT: an axial and a coronal slice with the organs overlaid, captions and a legend.

Both slices share one scale (millimetres per pixel), so organs compare in size across them and keep their physical
proportions; the image is at least `MIN_LONG_SIDE` pixels on its long side whatever the CT's spacing, finer than
the CT's voxels where they are coarse (nearest neighbour: no invented detail, only larger pixels). A coronal slice
of a thin slab would be a strip a few pixels high: it is stretched head to foot by a whole factor, which its caption
states. The legend names each organ's colour (`labels.ORGANS`, shared with the DICOM outputs) and the stripes of
an organ cut off by the scan.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from efficientscn.atomic import atomic_output
from efficientscn.labels import ORGANS

logger = logging.getLogger(__name__)

WINDOW_HU = (40.0, 400.0)
"""Soft-tissue window (level, width) for the grey CT."""

ALPHA = 0.45
"""Opacity of the organ fill; the outlines are opaque."""

LABEL_COLOURS = np.array([(0, 0, 0), *(organ.colour_rgb for organ in ORGANS.values())], dtype=np.float64)
"""RGB per label value: background (unused), then each organ's colour (`labels.ORGANS`)."""

MIN_LONG_SIDE = 512
"""The two slices side by side are at least this many pixels on their long side..."""
MAX_LONG_SIDE = 1024
"""...and at most this many (coarser pixels than the CT's then, for a large field of view at fine spacing)."""
MIN_PANEL_HEIGHT = 128
"""A coronal slice lower than this many pixels (a slab of a few slices) is stretched head to foot to reach it."""

GAP_PIXELS = 8
"""Black gap between the two slices, and between them and the legend."""
FONT_SIZE = 14
LINE_PIXELS = 22
"""Height of a caption line and of a legend row."""
SWATCH_PIXELS = 14

HATCH_PERIOD = 8
"""Pixels between the diagonal stripes of a hatched organ; half of each period is left without fill."""
HATCH_SWATCH_RGB = (200, 200, 200)
"""The colour of the legend's swatch for the stripes (any organ may be striped)."""
TEXT_RGB = (235, 235, 235)


@dataclass(frozen=True)
class Layout:
    """Where the two slices go: one scale for both, the coronal one stretched head to foot for a thin slab."""

    pixel_mm: float
    """The side of a preview pixel in millimetres, in both slices (the coronal one's height: times `stretch`)."""
    axial_px: tuple[int, int]
    """Rows (anterior at the top) and columns (the patient's right on the left) of the axial slice."""
    coronal_px: tuple[int, int]
    """Rows (head at the top) and columns of the coronal slice, after its stretch."""
    stretch: int
    """Whole factor the coronal slice is stretched head to foot by (1: not at all)."""


def preview_layout(shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> Layout:
    """The layout of the preview of a canonical CT of `shape_zyx` voxels of `spacing_zyx` mm.

    The scale is the CT's finest spacing, within what keeps the two slices side by side between `MIN_LONG_SIDE` and
    `MAX_LONG_SIDE` pixels on their long side.
    """
    (depth_mm, height_mm, width_mm) = (n * s for n, s in zip(shape_zyx, spacing_zyx, strict=True))
    long_mm = max(2 * width_mm, height_mm, depth_mm)
    pixel_mm = min(max(min(spacing_zyx), long_mm / MAX_LONG_SIDE), long_mm / MIN_LONG_SIDE)
    columns = max(1, round(width_mm / pixel_mm))
    coronal_rows = max(1, round(depth_mm / pixel_mm))
    stretch = math.ceil(MIN_PANEL_HEIGHT / coronal_rows) if coronal_rows < MIN_PANEL_HEIGHT else 1
    return Layout(
        pixel_mm=pixel_mm,
        axial_px=(max(1, round(height_mm / pixel_mm)), columns),
        coronal_px=(round(depth_mm * stretch / pixel_mm) or stretch, columns),
        stretch=stretch,
    )


def _resampled(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resample of a 2-D slice to `size` (rows, columns) over the same physical extent."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * plane.shape[0] / size[0]).astype(int), plane.shape[0] - 1)
    columns = np.minimum(((np.arange(size[1]) + 0.5) * plane.shape[1] / size[1]).astype(int), plane.shape[1] - 1)
    return plane[np.ix_(rows, columns)]


def _stripes(shape: tuple[int, int]) -> np.ndarray:
    """Where a hatched fill is left out: every other diagonal band of `HATCH_PERIOD` / 2 pixels."""
    rows, cols = np.indices(shape)
    return (rows + cols) % HATCH_PERIOD >= HATCH_PERIOD // 2


def _render(ct: np.ndarray, label: np.ndarray, hatched: Sequence[int] = ()) -> np.ndarray:
    """RGB uint8 of a windowed CT slice with a translucent fill and an opaque outline per organ; the organs whose
    label values are in `hatched` get their fill in diagonal stripes only."""
    level, width = WINDOW_HU
    grey = np.clip((ct.astype(np.float64) - (level - width / 2)) / width, 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    organ = label > 0
    colour = LABEL_COLOURS[label]
    gaps = np.isin(label, list(hatched)) & _stripes(label.shape)
    fill = organ & ~gaps
    rgb[fill] = (1.0 - ALPHA) * rgb[fill] + ALPHA * colour[fill]
    padded = np.pad(label, 1, mode="edge")
    edge = organ & (
        (padded[:-2, 1:-1] != label)
        | (padded[2:, 1:-1] != label)
        | (padded[1:-1, :-2] != label)
        | (padded[1:-1, 2:] != label)
    )
    rgb[edge] = colour[edge]
    return np.rint(rgb).astype(np.uint8)


def _centre_of_mass(mask: np.ndarray) -> np.ndarray:
    """The rounded centre of mass (z, y, x) of a mask, from its per-axis sums; the volume centre if empty."""
    total = np.count_nonzero(mask)
    if not total:
        return np.array(mask.shape) // 2
    others = ((1, 2), (0, 2), (0, 1))
    profiles = [mask.sum(axis=axes) for axes in others]  # voxels per index along z, y, x
    return np.array([round(float(profile @ np.arange(profile.size)) / total) for profile in profiles])


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)  # Pillow's own font: nothing to find on the machine


def _legend(width: int, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> np.ndarray:
    """The legend rows, `width` pixels wide: a swatch and the name of each organ, then the stripes' meaning."""
    entries: list[tuple[np.ndarray, str]] = []
    for organ in ORGANS.values():
        swatch = np.empty((SWATCH_PIXELS, SWATCH_PIXELS, 3), np.uint8)
        swatch[:] = organ.colour_rgb
        entries.append((swatch, organ.name))
    striped = np.zeros((SWATCH_PIXELS, SWATCH_PIXELS, 3), np.uint8)
    striped[~_stripes(striped.shape[:2])] = HATCH_SWATCH_RGB
    entries.append((striped, "striped: cut off by the scan's end"))
    image = Image.new("RGB", (width, LINE_PIXELS * 2), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    x, y = GAP_PIXELS, 0
    for swatch, text in entries:
        needed = SWATCH_PIXELS + 6 + int(draw.textlength(text, font=font)) + 3 * GAP_PIXELS
        if x + needed > width and x > GAP_PIXELS:  # the rest on the next row
            x, y = GAP_PIXELS, y + LINE_PIXELS
        top = y + (LINE_PIXELS - SWATCH_PIXELS) // 2
        image.paste(Image.fromarray(swatch), (x, top))
        draw.text((x + SWATCH_PIXELS + 6, y + LINE_PIXELS // 2), text, fill=TEXT_RGB, font=font, anchor="lm")
        x += needed
    return np.asarray(image)[: y + LINE_PIXELS]


NOTICE_RGB = (170, 20, 20)
"""The background of a notice: red, above everything else."""


def _banner(text: str, width: int, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> np.ndarray:
    """`text` in white on red, `width` pixels wide, its words wrapped over as many lines as it needs."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and measure.textlength(candidate, font=font) <= width - 2 * GAP_PIXELS:
            lines[-1] = candidate
        else:
            lines.append(word)
    image = Image.new("RGB", (width, LINE_PIXELS * len(lines)), NOTICE_RGB)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text(
            (GAP_PIXELS, LINE_PIXELS * index + LINE_PIXELS // 2), line, fill=(255, 255, 255), font=font, anchor="lm"
        )
    return np.asarray(image)


def _captioned(panel: np.ndarray, caption: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> np.ndarray:
    """The panel below a line of text."""
    line = Image.new("RGB", (panel.shape[1], LINE_PIXELS), (0, 0, 0))
    ImageDraw.Draw(line).text((2, LINE_PIXELS // 2), caption, fill=TEXT_RGB, font=font, anchor="lm")
    return np.concatenate([np.asarray(line), panel])


def write_preview(
    ct: np.ndarray,
    label: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    path: Path,
    *,
    overwrite: bool = False,
    hatched: Sequence[int] = (),
    notice: str | None = None,
) -> Path:
    """Write a PNG with an axial (left) and a coronal (right) slice through the centre of the labelled organs, each
    under its caption, and the legend below them; a `notice` (the models are demonstration models, say) stands
    above them in a red band.

    `ct` (HU) and `label` are zyx arrays on the canonical LPS grid, so the axial view is already radiological
    (patient right on the image left, anterior at the top); the coronal view is flipped to put superior at the
    top. Both cut through the label's centre of mass, or the volume centre when the label is empty, at the scale
    and sizes of `preview_layout`, top-aligned. The organs whose label values are in `hatched` (those cut off by
    the scan) are filled in diagonal stripes. An existing `path` raises FileExistsError unless `overwrite`.
    """
    ct, label = np.asarray(ct), np.asarray(label)
    if ct.ndim != 3 or ct.shape != label.shape:
        raise ValueError(f"ct {ct.shape} and label {label.shape} must be 3-D zyx arrays of the same shape")
    if len(spacing_zyx) != 3 or min(spacing_zyx) <= 0:
        raise ValueError(f"spacing_zyx {spacing_zyx} must be three positive sizes in mm")
    layout = preview_layout(ct.shape, spacing_zyx)
    z, y, _ = centre = _centre_of_mass(label > 0)
    axial = _render(_resampled(ct[z], layout.axial_px), _resampled(label[z], layout.axial_px), hatched)
    coronal = _render(
        _resampled(ct[::-1, y], layout.coronal_px), _resampled(label[::-1, y], layout.coronal_px), hatched
    )
    font = _font()
    stretched = f", {layout.stretch}x stretched" if layout.stretch > 1 else ""
    panels = [
        _captioned(axial, "axial, patient's right on the left", font),
        _captioned(coronal, f"coronal, head up{stretched}", font),
    ]
    height = max(panel.shape[0] for panel in panels)
    padded = [np.pad(panel, ((0, height - panel.shape[0]), (0, 0), (0, 0))) for panel in panels]
    row = np.concatenate([padded[0], np.zeros((height, GAP_PIXELS, 3), np.uint8), padded[1]], axis=1)
    legend = _legend(row.shape[1], font)
    canvas = np.concatenate([row, np.zeros((GAP_PIXELS, row.shape[1], 3), np.uint8), legend])
    if notice:
        canvas = np.concatenate([_banner(notice, canvas.shape[1], font), canvas])
    path = Path(path)
    with atomic_output(path, suffix=".png", overwrite=overwrite) as temporary:
        Image.fromarray(canvas).save(temporary, format="PNG")
    logger.info(
        "wrote preview %s (%d x %d pixels, %.3g mm per pixel, centre zyx %s)",
        path,
        canvas.shape[1],
        canvas.shape[0],
        layout.pixel_mm,
        centre.tolist(),
    )
    return path
