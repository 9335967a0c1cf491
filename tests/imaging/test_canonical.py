"""The canonical (LPS) view of a CT and its exact way back, and `CanonicalCT`, on every shared case."""

from __future__ import annotations

import gc
import gzip
import logging
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging import canonical as canonical_module
from efficientscn.imaging.canonical import CanonicalCT, canonical_reorientation, to_canonical
from efficientscn.imaging.geometry import FLARE21_MEAN_SPACING_XYZ, grid_of, physical_bounding_box
from efficientscn.imaging.read import read_ct, read_label, spacing_is_stored
from efficientscn.imaging.write import write_label

from helpers import SharedCase, image_from_array, shared_case


def test_label_through_canonical_space_is_written_back_on_the_input_grid(
    any_shared_case: SharedCase, tmp_path: Path
) -> None:
    original = read_label(any_shared_case.label)
    canonical, reorientation = to_canonical(original)
    written = write_label(reorientation.to_original_image(sitk.GetArrayFromImage(canonical)), tmp_path / "x.nii.gz")
    reread = sitk.ReadImage(str(written))
    assert reread.GetPixelID() == sitk.sitkUInt8
    assert reread.GetSize() == original.GetSize()
    assert reread.GetSpacing() == pytest.approx(original.GetSpacing(), abs=1e-6)
    assert reread.GetOrigin() == pytest.approx(original.GetOrigin(), abs=1e-4)
    assert reread.GetDirection() == pytest.approx(original.GetDirection(), abs=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(reread), sitk.GetArrayFromImage(original))


def test_a_large_label_is_restored_without_a_contiguous_copy_and_equally(
    monkeypatch: pytest.MonkeyPatch, any_shared_case: SharedCase
) -> None:
    """Beyond `CONTIGUOUS_COPY_MAX_VOXELS` SimpleITK copies the reoriented view itself: the same image."""
    canonical, reorientation = to_canonical(read_label(any_shared_case.label))
    array = sitk.GetArrayFromImage(canonical)
    through_copy = reorientation.to_original_image(array)
    monkeypatch.setattr(canonical_module, "CONTIGUOUS_COPY_MAX_VOXELS", 0)
    from_view = reorientation.to_original_image(array)
    assert np.array_equal(sitk.GetArrayViewFromImage(from_view), sitk.GetArrayViewFromImage(through_copy))
    assert from_view.GetDirection() == through_copy.GetDirection() and from_view.GetOrigin() == through_copy.GetOrigin()


def test_canonical_image_keeps_every_voxel_at_its_physical_place(any_shared_case: SharedCase) -> None:
    ct, label = read_ct(any_shared_case.image), read_label(any_shared_case.label)
    canonical_ct, reorientation = to_canonical(ct)
    canonical_label, _ = to_canonical(label)
    # The organs occupy the same physical box before and after reorientation ...
    original_box = physical_bounding_box(sitk.GetArrayViewFromImage(label) > 0, grid_of(label))
    canonical_box = physical_bounding_box(sitk.GetArrayViewFromImage(canonical_label) > 0, grid_of(canonical_label))
    assert canonical_box[0] == pytest.approx(original_box[0], abs=1e-3)
    assert canonical_box[1] == pytest.approx(original_box[1], abs=1e-3)
    # ... CT and label stay aligned (same HU inside the liver) ...
    liver_hu = np.median(sitk.GetArrayViewFromImage(ct)[sitk.GetArrayViewFromImage(label) == 1])
    canonical_liver_hu = np.median(
        sitk.GetArrayViewFromImage(canonical_ct)[sitk.GetArrayViewFromImage(canonical_label) == 1]
    )
    assert canonical_liver_hu == liver_hu
    # ... and the NumPy view of the reorientation is exactly what SimpleITK's filter produced.
    assert np.array_equal(
        reorientation.to_canonical_array(sitk.GetArrayViewFromImage(ct)), sitk.GetArrayViewFromImage(canonical_ct)
    )
    # The reorientation found from the direction alone is the same, and so is the canonical spacing.
    assert canonical_reorientation(ct) == reorientation
    assert reorientation.canonical_spacing_xyz == pytest.approx(canonical_ct.GetSpacing(), abs=1e-9)


def test_canonical_axes_point_left_posterior_superior(any_shared_case: SharedCase) -> None:
    canonical, _ = to_canonical(read_ct(any_shared_case.image))
    direction = np.asarray(canonical.GetDirection()).reshape(3, 3)
    assert np.all(np.diag(direction) > 0.9), direction  # index axis i runs along +x, +y, +z (L, P, S)
    if "oblique" not in any_shared_case.id:
        assert direction == pytest.approx(np.eye(3))


def test_canonical_ct_reads_onto_the_processing_grid_and_restores_a_label_onto_the_exact_grid(
    any_shared_case: SharedCase,
) -> None:
    """The one way onto the processing grid and back that predict, the benchmarks and Python users share."""
    as_read = read_ct(any_shared_case.image)
    ct = CanonicalCT.read(any_shared_case.image)
    assert np.shares_memory(ct.array_zyx, sitk.GetArrayViewFromImage(ct.image))  # a view, not a copy of the CT
    oblique = "oblique" in any_shared_case.id
    assert (ct.oblique_grid is not None) == oblique and ct.oblique_image is None  # not kept unless asked
    kept = CanonicalCT.read(any_shared_case.image, keep_as_read=True)
    assert (kept.oblique_image is not None) == oblique
    assert not grid_of(kept.image_as_read).differences(grid_of(as_read))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(kept.image_as_read), sitk.GetArrayViewFromImage(as_read))
    if oblique:  # resampled onto an axis-aligned grid first
        with pytest.raises(ValueError, match="keep_as_read"):
            _ = ct.image_as_read
        assert ct.image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    body = (ct.array_zyx > -500).astype(np.uint8)
    restored = ct.restore(body)
    assert not grid_of(restored).differences(grid_of(as_read))
    expected = sitk.GetArrayViewFromImage(as_read) > -500
    agreement = np.mean((sitk.GetArrayViewFromImage(restored) > 0) == expected)
    if not oblique:
        assert agreement == 1.0  # permutations and flips only: exact
    else:
        assert agreement > 0.97  # linear there, nearest back: the body's surface moves by up to a voxel


def test_canonical_ct_takes_the_flare21_mean_for_a_spacing_of_one_mm_only_where_none_is_stored() -> None:
    image = image_from_array(np.zeros((4, 5, 6), np.int16), spacing=(1.0, 1.0, 1.0))
    missing = CanonicalCT.from_image(image, spacing_stored=False)
    assert missing.spacing_zyx == FLARE21_MEAN_SPACING_XYZ[::-1] and missing.spacing_source == "FLARE21 mean"
    assert missing.image.GetSpacing() == (1.0, 1.0, 1.0)  # the CT's own geometry is left as it is
    stored = CanonicalCT.from_image(image)  # a genuine 1 mm CT: kidney Dice 0.31 instead of 0.85 if rescaled
    assert stored.spacing_zyx == (1.0, 1.0, 1.0) and stored.spacing_source == "header"
    assert CanonicalCT.from_image(image, spacing_fallback="always").spacing_source == "FLARE21 mean"  # original
    assert CanonicalCT.from_image(image, spacing_fallback="never", spacing_stored=False).spacing_zyx == (1, 1, 1)


@pytest.mark.parametrize("compress", [False, True])
def test_a_nifti_without_qform_and_sform_evidently_stores_no_spacing(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / ("ct.nii.gz" if compress else "ct.nii")
    sitk.WriteImage(image_from_array(np.full((8, 9, 10), -1000, np.int16), spacing=(1.0, 1.0, 1.0)), str(path))
    assert spacing_is_stored(path) and CanonicalCT.read(path).spacing_source == "header"
    raw = bytearray(gzip.decompress(path.read_bytes()) if compress else path.read_bytes())
    struct.pack_into("<2h", raw, 252, 0, 0)  # qform_code, sform_code: no orientation, no spacing to speak of
    path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    assert not spacing_is_stored(path)
    ct = CanonicalCT.read(path)
    assert ct.spacing_source == "FLARE21 mean" and ct.spacing_zyx == FLARE21_MEAN_SPACING_XYZ[::-1]
    assert CanonicalCT.read(path, spacing_fallback="never").spacing_zyx == (1.0, 1.0, 1.0)


def test_a_nifti_ct_without_orientation_is_read_with_a_warning_that_names_the_assumption(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its axes are taken as LPS: the shared RAS CT without its sform is the patient mirrored left-right and
    front-back (liver Dice 0.03 against the same CT with its orientation), so the case must say so."""
    source = shared_case("ts_example_ct_sm").image
    oriented = CanonicalCT.read(source)  # kept: its array is a view of its image
    assert oriented.reading_warnings == ()
    raw = bytearray(gzip.decompress(source.read_bytes()))
    struct.pack_into("<2h", raw, 252, 0, 0)  # qform_code, sform_code
    path = tmp_path / "bare.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with caplog.at_level(logging.WARNING):
        ct = CanonicalCT.read(path)
    (warning,) = ct.reading_warnings
    assert warning.startswith(f"{path}: NIfTI without qform and sform: where the patient lies is unknown")
    assert "assumed to run to the patient's left, posterior and superior (LPS)" in warning
    assert [record.getMessage() for record in caplog.records] == [warning]  # once, in the log too
    assert ct.spacing_source == "header"  # its pixdim of 3 mm is no 1 mm to take as missing
    # the RAS voxels are not flipped in x and y: the assumption mirrors this patient
    np.testing.assert_array_equal(ct.array_zyx, oriented.array_zyx[:, ::-1, ::-1])


def test_metaimage_nrrd_and_dicom_say_whether_they_store_a_spacing(tmp_path: Path) -> None:
    image = image_from_array(np.zeros((8, 9, 10), np.int16), spacing=(1.0, 1.0, 1.0))
    for name in ("ct.mha", "ct.nrrd"):
        sitk.WriteImage(image, str(tmp_path / name))
        assert spacing_is_stored(tmp_path / name)
    text = (tmp_path / "ct.mha").read_bytes()
    (tmp_path / "bare.mha").write_bytes(re.sub(rb"ElementSpacing = [^\n]*\n", b"", text))
    assert not spacing_is_stored(tmp_path / "bare.mha")
    assert spacing_is_stored(shared_case("ts_example_ct_dicom").image)  # Pixel Spacing is there


def test_canonical_ct_refuses_a_ct_over_the_voxel_limit_from_its_header_or_in_memory(tmp_path: Path) -> None:
    image = image_from_array(np.zeros((10, 20, 30), np.int16))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match=r"CT too large: 6,000 voxels .*the limit is 5,999"):
        CanonicalCT.read(path, max_voxels=5_999)
    with pytest.raises(InputError, match="CT too large"):
        CanonicalCT.from_image(image, max_voxels=5_999)
    assert CanonicalCT.read(path, max_voxels=6_000).array_zyx.shape == (10, 20, 30)


def test_the_processing_array_keeps_its_ct_alive_after_the_ct_object_is_gone() -> None:
    """`CanonicalCT.read(path).array_zyx` on a temporary object: the view holds the image, so it never reads memory
    that was freed (it used to give zeros or another image's voxels)."""
    path = shared_case("ts_example_ct_sm").image
    expected = CanonicalCT.read(path).array_zyx.copy()
    array = CanonicalCT.read(path).array_zyx
    gc.collect()
    others = [sitk.Image([122, 101, 30], sitk.sitkInt16) + 1234 for _ in range(8)]  # reuse freed memory, if any
    np.testing.assert_array_equal(array, expected)
    assert others and not array.flags.writeable
