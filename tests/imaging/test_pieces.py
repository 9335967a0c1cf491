"""Connected pieces found a slab at a time: the same piece sizes as ITK's filter on the whole mask."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.pieces import PIECES_SLAB, piece_sizes, slab_depth


def _whole_mask_sizes(mask: np.ndarray) -> np.ndarray:
    labelled = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    return np.sort(np.bincount(labelled.ravel())[1:])[::-1]


@pytest.mark.parametrize("slab", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("density", [0.05, 0.1, 0.2])
def test_pieces_by_slabs_are_the_whole_masks(slab: int, density: float) -> None:
    """Random masks near the percolation threshold: many pieces, joined across slab boundaries by faces, edges and
    corners (26-connectivity), some snaking through several slabs; a slab of one slice joins every boundary."""
    mask = np.random.default_rng(round(density * 100)).random((23, 17, 19)) < density
    expected = _whole_mask_sizes(mask)
    assert len(expected) > 1  # the case has pieces to tell apart
    np.testing.assert_array_equal(piece_sizes(lambda begin, end: mask[begin:end], len(mask), slab), expected)


def test_pieces_touching_only_diagonally_across_a_boundary_are_one() -> None:
    mask = np.zeros((4, 5, 5), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner to corner across the boundary between slices 1 and 2
    mask[1, 4, 0] = mask[2, 2, 2] = True  # and a separate voxel two rows away: not a neighbour
    np.testing.assert_array_equal(piece_sizes(lambda begin, end: mask[begin:end], 4, slab=2), [2, 1])
    np.testing.assert_array_equal(_whole_mask_sizes(mask), [2, 1])


def test_an_empty_mask_has_no_pieces() -> None:
    assert piece_sizes(lambda begin, end: np.zeros((end - begin, 3, 3), bool), 5, slab=2).size == 0


def test_a_small_mask_is_labelled_at_once_a_large_one_by_slabs() -> None:
    assert slab_depth((200, 100, 100)) == 200
    assert slab_depth((1208, 512, 512)) == PIECES_SLAB
