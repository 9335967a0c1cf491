"""The quick-look PNG: layout, overlay colours, orientation, physical proportions, atomic writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.canonical import to_canonical
from efficientscn.imaging.read import read_ct, read_label
from efficientscn.outputs.preview import GAP_PIXELS, HATCH_PERIOD, LABEL_COLOURS, write_preview

from helpers import shared_case

SHAPE = (20, 64, 80)  # z, y, x


def _ct() -> np.ndarray:
    """A soft-tissue CT with a gentle gradient along x, so grey levels vary across the image."""
    return np.broadcast_to(np.linspace(-100, 180, SHAPE[2]), SHAPE).astype(np.int16)


def _label() -> np.ndarray:
    """Liver (1) and spleen (3) blocks side by side in the same slices."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[6:14, 20:40, 10:30] = 1
    label[6:14, 20:40, 50:70] = 3
    return label


def _read(path: Path) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    assert image.GetDimension() == 2
    assert image.GetNumberOfComponentsPerPixel() == 3
    assert image.GetPixelID() == sitk.sitkVectorUInt8
    return sitk.GetArrayFromImage(image)


def _coloured(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])


def test_layout_and_liver_tint(tmp_path: Path) -> None:
    path = write_preview(_ct(), _label(), (1.0, 1.0, 1.0), tmp_path / "preview.png")
    rgb = _read(path).astype(int)
    # axial 64 x 80 beside coronal 20 x 80 (1 mm pixels), padded to the taller one
    assert rgb.shape == (64, 80 + GAP_PIXELS + 80, 3)
    liver_pixel, grey = rgb[30, 20], rgb[50, 20, 0]  # block centre; the same column below the block
    assert np.linalg.norm(liver_pixel - LABEL_COLOURS[1]) < np.linalg.norm(grey - LABEL_COLOURS[1])
    assert liver_pixel[0] > grey > liver_pixel[2]
    assert np.linalg.norm(rgb[30, 60] - LABEL_COLOURS[3]) < np.linalg.norm(rgb[50, 60] - LABEL_COLOURS[3])
    far = rgb[55:, :80]
    assert not _coloured(far).any()
    assert far.min() < far.max()  # the CT gradient is visible, not a flat fill
    assert _coloured(rgb[:20, 80 + GAP_PIXELS :]).any()  # organs in the coronal view too
    assert not rgb[:, 80 : 80 + GAP_PIXELS].any()


def test_anisotropic_spacing_keeps_physical_height(tmp_path: Path) -> None:
    rgb = _read(write_preview(_ct(), _label(), (5.0, 1.0, 1.0), tmp_path / "preview.png"))
    coronal = rgb[:, 80 + GAP_PIXELS :]
    assert rgb.shape == (100, 80 + GAP_PIXELS + 80, 3)  # 20 slices x 5 mm = 100 mm tall
    rows = np.flatnonzero(_coloured(coronal).any(axis=1))
    assert rows.min() >= 28 and rows.max() <= 71  # z 6..13 -> flipped rows 6..13 -> 30..70 mm
    assert not _coloured(rgb[64:, :80]).any()  # axial view padded below with black


def test_coronal_has_superior_at_top(tmp_path: Path) -> None:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[-3:, 20:40, 10:30] = 1  # highest z = most superior in LPS
    rgb = _read(write_preview(_ct(), label, (1.0, 1.0, 1.0), tmp_path / "preview.png"))
    coronal = _coloured(rgb[: SHAPE[0], 80 + GAP_PIXELS :])
    assert coronal[:3].any()
    assert not coronal[3:].any()


def test_empty_label_writes_grey_image(tmp_path: Path) -> None:
    rgb = _read(write_preview(_ct(), np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0), tmp_path / "preview.png"))
    assert rgb.shape == (64, 80 + GAP_PIXELS + 80, 3)
    assert not _coloured(rgb).any()
    assert rgb.max() > 0


def test_overwrite_refused_and_old_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "preview.png"
    write_preview(_ct(), _label(), (1.0, 1.0, 1.0), path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_preview(_ct(), np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0), path)
    assert path.read_bytes() == before
    write_preview(_ct(), np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0), path, overwrite=True)
    assert not _coloured(_read(path)).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]


@pytest.mark.parametrize("label_shape", [(20, 64, 81), (64, 80)])
def test_bad_shapes_raise(tmp_path: Path, label_shape: tuple[int, ...]) -> None:
    ct = _ct() if len(label_shape) == 3 else _ct()[0]
    with pytest.raises(ValueError, match="same shape"):
        write_preview(ct, np.zeros(label_shape, np.uint8), (1.0, 1.0, 1.0), tmp_path / "preview.png")
    assert not (tmp_path / "preview.png").exists()


def test_real_ct(tmp_path: Path) -> None:
    case = shared_case("ts_example_ct")
    ct_image, _ = to_canonical(read_ct(case.image))
    label_image, _ = to_canonical(read_label(case.label))
    spacing_zyx = tuple(reversed(ct_image.GetSpacing()))
    rgb = _read(
        write_preview(
            sitk.GetArrayFromImage(ct_image), sitk.GetArrayFromImage(label_image), spacing_zyx, tmp_path / "ct.png"
        )
    )
    assert rgb.shape[0] <= 512 and rgb.shape[1] <= 2 * 512 + GAP_PIXELS
    assert _coloured(rgb).sum() > 0


def test_hatched_organs_are_filled_in_stripes_and_the_others_whole(tmp_path: Path) -> None:
    """An organ flagged as cut off by the scan (here the spleen) keeps its outline; inside, half its pixels are
    the plain CT, in diagonal stripes; the liver beside it stays filled throughout."""
    plain = _read(write_preview(_ct(), np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0), tmp_path / "plain.png"))
    rgb = _read(write_preview(_ct(), _label(), (1.0, 1.0, 1.0), tmp_path / "hatched.png", hatched=[3]))
    liver_inside, spleen_inside = rgb[21:39, 11:29], rgb[21:39, 51:69]  # within the outlines
    assert _coloured(liver_inside).all()
    unfilled = (spleen_inside == plain[21:39, 51:69]).all(axis=-1)
    assert 0.3 < unfilled.mean() < 0.7
    rows, cols = np.indices(unfilled.shape)
    stripes = (rows + cols + 21 + 51) % HATCH_PERIOD
    assert unfilled[stripes >= HATCH_PERIOD // 2].all() and not unfilled[stripes < HATCH_PERIOD // 2].any()
    assert _coloured(rgb[20, 50:70]).all()  # the outline stays whole
