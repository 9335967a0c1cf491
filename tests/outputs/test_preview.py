"""The quick-look PNG: layout, scale, overlay colours, orientation, legend, hatching, atomic writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.canonical import CanonicalCT, to_canonical
from efficientscn.labels import ORGANS
from efficientscn.outputs.preview import (
    GAP_PIXELS,
    HATCH_PERIOD,
    LABEL_COLOURS,
    LINE_PIXELS,
    MIN_PANEL_HEIGHT,
    NOTICE_RGB,
    preview_layout,
    write_preview,
)

from helpers import shared_case

SHAPE = (200, 256, 256)  # z, y, x: at 1 mm, two slices side by side are 512 mm wide, one preview pixel a voxel
UNIT = (1.0, 1.0, 1.0)
_SIZES = ((256, 256), (200, 256))
"""The axial and coronal slices' pixels (rows, columns) of the preview of a CT of SHAPE at 1 mm."""


def _ct(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A soft-tissue CT with a gentle gradient along x, so grey levels vary across the image."""
    return np.broadcast_to(np.linspace(-100, 180, shape[2]), shape).astype(np.int16)


def _label() -> np.ndarray:
    """Liver (1) and spleen (3) blocks side by side in the same slices."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[60:140, 80:160, 40:120] = 1
    label[60:140, 80:160, 150:230] = 3
    return label


def _read(path: Path) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    assert image.GetDimension() == 2
    assert image.GetNumberOfComponentsPerPixel() == 3
    assert image.GetPixelID() == sitk.sitkVectorUInt8
    return sitk.GetArrayFromImage(image)


def _coloured(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])


def _panels(rgb: np.ndarray, axial_px: tuple[int, int], coronal_px: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The axial and coronal slices of a preview, below their caption lines, side by side."""
    top = LINE_PIXELS
    left = axial_px[1] + GAP_PIXELS
    return (
        rgb[top : top + axial_px[0], : axial_px[1]],
        rgb[top : top + coronal_px[0], left : left + coronal_px[1]],
    )


def test_layout_scale_and_liver_tint(tmp_path: Path) -> None:
    rgb = _read(write_preview(_ct(), _label(), UNIT, tmp_path / "preview.png")).astype(int)
    axial, coronal = _panels(rgb, *_SIZES)  # one pixel a voxel: 512 mm over 512 pixels
    assert rgb.shape[1] == 256 + GAP_PIXELS + 256 and rgb.shape[0] > LINE_PIXELS + 256
    liver_pixel, grey = axial[120, 80], axial[200, 80]  # block centre; the same column below the block
    assert np.linalg.norm(liver_pixel - LABEL_COLOURS[1]) < np.linalg.norm(grey - LABEL_COLOURS[1])
    assert liver_pixel[0] > grey[0] > liver_pixel[2]
    assert np.linalg.norm(axial[120, 190] - LABEL_COLOURS[3]) < np.linalg.norm(axial[200, 190] - LABEL_COLOURS[3])
    assert not _coloured(axial[170:]).any() and axial[170:].min() < axial[170:].max()  # the CT gradient shows
    coloured_rows = np.flatnonzero(_coloured(coronal).any(axis=1))
    assert (coloured_rows.min(), coloured_rows.max()) == (200 - 140, 200 - 61)  # z 60..139, head up
    assert not rgb[LINE_PIXELS : LINE_PIXELS + 256, 256 : 256 + GAP_PIXELS].any()


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((30, 101, 122), (3.0, 3.0, 3.0)), ((112, 101, 122), (3.0, 3.0, 3.0)), ((8, 512, 512), (5.0, 0.5, 0.5))],
    ids=["3mm_slab", "3mm_abdomen", "fine_thick_slices"],
)
def test_the_preview_is_at_least_512_pixels_long_and_both_slices_share_one_physical_scale(
    tmp_path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    """A 3 mm CT gave a 248 x 112 pixel preview; now the slices are scaled up, alike."""
    rgb = _read(write_preview(_ct(shape), np.zeros(shape, np.uint8), spacing, tmp_path / "preview.png"))
    layout = preview_layout(shape, spacing)
    assert max(rgb.shape[:2]) >= 512
    width_mm, height_mm, depth_mm = shape[2] * spacing[2], shape[1] * spacing[1], shape[0] * spacing[0]
    # the axial slice keeps the CT's proportions, and both slices are as wide as the CT at one scale
    (axial_rows, axial_columns), (coronal_rows, coronal_columns) = layout.axial_px, layout.coronal_px
    assert axial_columns == coronal_columns and rgb.shape[1] == 2 * axial_columns + GAP_PIXELS
    assert axial_rows / axial_columns == pytest.approx(height_mm / width_mm, abs=1.5 / axial_columns)
    assert coronal_rows / layout.stretch / coronal_columns == pytest.approx(
        depth_mm / width_mm, abs=1.5 / coronal_columns
    )


def test_a_thin_slab_is_stretched_head_to_foot_and_says_so(tmp_path: Path) -> None:
    """20 slices of 2 mm under 512 x 512 pixels of 0.977 mm (the shared DICOM series): 40 mm, 41 pixels at the scale
    of its axial slice (a strip), stretched 4x to 164."""
    shape, spacing = (20, 512, 512), (2.0, 0.9765625, 0.9765625)
    layout = preview_layout(shape, spacing)
    assert layout.pixel_mm == pytest.approx(0.9765625)
    assert layout.stretch == 4 and layout.coronal_px == (164, 512) and layout.axial_px == (512, 512)
    assert layout.coronal_px[0] >= MIN_PANEL_HEIGHT
    label = np.zeros(shape, np.uint8)
    label[:10, 200:300, 200:300] = 1  # the lower half of the slab
    rgb = _read(write_preview(_ct(shape), label, spacing, tmp_path / "slab.png"))
    _, coronal = _panels(rgb, layout.axial_px, layout.coronal_px)
    rows = np.flatnonzero(_coloured(coronal).any(axis=1))
    assert (rows.min(), rows.max()) == (82, 163)  # the lower half, head up, 8.2 rows per slice
    caption = rgb[:LINE_PIXELS, 512 + GAP_PIXELS :]
    assert (caption > 128).any()  # its caption (which says "4x stretched") is written


def test_the_legend_shows_each_organ_colour_and_the_stripes(tmp_path: Path) -> None:
    rgb = _read(write_preview(_ct(), _label(), UNIT, tmp_path / "preview.png"))
    legend = rgb[LINE_PIXELS + 256 + GAP_PIXELS :]  # below the taller (axial) slice: 256 rows
    assert 0 < legend.shape[0] <= 2 * LINE_PIXELS
    for organ in ORGANS.values():
        swatch = (legend == organ.colour_rgb).all(axis=-1)
        assert swatch.sum() >= 100, organ.name  # a solid swatch of its exact colour
    grey = (legend == legend[..., :1]).all(axis=-1) & (legend[..., 0] == 200)
    assert grey.sum() >= 40  # the striped swatch
    text = (legend > 128).all(axis=-1) & ~grey
    assert text.sum() > 200  # the names


def test_coronal_has_superior_at_top(tmp_path: Path) -> None:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[-3:, 80:160, 40:120] = 1  # highest z = most superior in LPS
    rgb = _read(write_preview(_ct(), label, UNIT, tmp_path / "preview.png"))
    _, coronal = _panels(rgb, *_SIZES)
    rows = np.flatnonzero(_coloured(coronal).any(axis=1))
    assert (rows.min(), rows.max()) == (0, 2)


def test_empty_label_writes_grey_slices(tmp_path: Path) -> None:
    rgb = _read(write_preview(_ct(), np.zeros(SHAPE, np.uint8), UNIT, tmp_path / "preview.png"))
    axial, coronal = _panels(rgb, *_SIZES)
    assert not _coloured(axial).any() and not _coloured(coronal).any()
    assert axial.max() > 0


def test_overwrite_refused_and_old_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "preview.png"
    write_preview(_ct(), _label(), UNIT, path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_preview(_ct(), np.zeros(SHAPE, np.uint8), UNIT, path)
    assert path.read_bytes() == before
    write_preview(_ct(), np.zeros(SHAPE, np.uint8), UNIT, path, overwrite=True)
    assert not _coloured(_panels(_read(path), *_SIZES)[0]).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]


@pytest.mark.parametrize("label_shape", [(200, 256, 255), (256, 256)])
def test_bad_shapes_raise(tmp_path: Path, label_shape: tuple[int, ...]) -> None:
    ct = _ct() if len(label_shape) == 3 else _ct()[0]
    with pytest.raises(ValueError, match="same shape"):
        write_preview(ct, np.zeros(label_shape, np.uint8), UNIT, tmp_path / "preview.png")
    assert not (tmp_path / "preview.png").exists()


def test_real_ct(tmp_path: Path) -> None:
    """The 3 mm shared abdomen: 122 x 101 x 112 voxels gave 248 x 112 pixels; now over 512 wide, with its organs."""
    case = shared_case("ts_example_ct")
    ct = CanonicalCT.read(case.image)  # kept: array_zyx is a view of its image
    label_image, _ = to_canonical(sitk.ReadImage(str(case.label), sitk.sitkUInt8))
    rgb = _read(write_preview(ct.array_zyx, sitk.GetArrayFromImage(label_image), ct.spacing_zyx, tmp_path / "ct.png"))
    assert rgb.shape[1] >= 512 and rgb.shape[1] <= 1024 + GAP_PIXELS
    assert _coloured(rgb).sum() > 0


def test_hatched_organs_are_filled_in_stripes_and_the_others_whole(tmp_path: Path) -> None:
    """An organ flagged as cut off by the scan (here the spleen) keeps its outline; inside, half its pixels are
    the plain CT, in diagonal stripes; the liver beside it stays filled throughout."""
    plain = _panels(_read(write_preview(_ct(), np.zeros(SHAPE, np.uint8), UNIT, tmp_path / "plain.png")), *_SIZES)
    rgb = _panels(_read(write_preview(_ct(), _label(), UNIT, tmp_path / "hatched.png", hatched=[3])), *_SIZES)
    axial, plain_axial = rgb[0], plain[0]
    liver_inside, spleen_inside = axial[81:159, 41:119], axial[81:159, 151:229]  # within the outlines
    assert _coloured(liver_inside).all()
    unfilled = (spleen_inside == plain_axial[81:159, 151:229]).all(axis=-1)
    assert 0.3 < unfilled.mean() < 0.7
    rows, cols = np.indices(unfilled.shape)
    stripes = (rows + cols + 81 + 151) % HATCH_PERIOD
    assert unfilled[stripes >= HATCH_PERIOD // 2].all() and not unfilled[stripes < HATCH_PERIOD // 2].any()
    assert _coloured(axial[80, 150:230]).all()  # the outline stays whole


def test_a_notice_stands_above_everything_in_red_and_wraps_to_the_width(tmp_path: Path) -> None:
    """What predict puts on the preview of demonstration models: the words on the image, not only in the log."""
    plain = _read(write_preview(_ct(), _label(), UNIT, tmp_path / "plain.png"))
    notice = "DEMONSTRATION MODELS: " + "trained on two patients, not for use " * 4
    marked = _read(write_preview(_ct(), _label(), UNIT, tmp_path / "marked.png", notice=notice))
    assert marked.shape[1] == plain.shape[1]
    lines = (marked.shape[0] - plain.shape[0]) // LINE_PIXELS
    assert marked.shape[0] - plain.shape[0] == lines * LINE_PIXELS and lines >= 2  # wrapped, not cut
    band = marked[: lines * LINE_PIXELS]
    assert (band == NOTICE_RGB).all(axis=-1).mean() > 0.5  # red, with white words on it
    assert ((band == 255).all(axis=-1)).any()
    np.testing.assert_array_equal(marked[lines * LINE_PIXELS :], plain)  # the rest as without
    assert not (plain == NOTICE_RGB).all(axis=-1).any()  # no notice, no red band
