"""The input contract: what the data configurations record, what a SavedModel's metadata may hold."""

from __future__ import annotations

import pytest

from efficientscn.augment import IntensityAugmentConfig
from efficientscn.data.localization import LocalizationDataConfig
from efficientscn.data.segmentation import SegmentationDataConfig
from efficientscn.model.contract import INTENSITY_SCALE_HU, PAPER_LOCALIZATION, PAPER_SEGMENTATION, InputContract


def test_the_papers_training_settings_give_the_papers_contracts() -> None:
    assert LocalizationDataConfig().input_contract() == PAPER_LOCALIZATION
    assert SegmentationDataConfig().input_contract() == PAPER_SEGMENTATION
    assert PAPER_LOCALIZATION.spacing_mm == 6.0 and PAPER_SEGMENTATION.spacing_mm == 2.0
    assert PAPER_SEGMENTATION.largest_size_zyx == (160, 128, 160)


def test_a_contract_follows_the_training_data_except_the_localization_smoothing() -> None:
    localization = LocalizationDataConfig(spacing_mm=8.0, valid_sizes_zyx=((64,), (48, 96), (48, 96)))
    contract = localization.input_contract()
    assert (contract.spacing_mm, contract.valid_sizes_zyx) == (8.0, ((64,), (48, 96), (48, 96)))
    assert contract.smoothing_sigma_mm == 0.0 != localization.smoothing_sigma_mm  # docs/fidelity.md #3
    z, y, _ = PAPER_SEGMENTATION.valid_sizes_zyx
    segmentation = SegmentationDataConfig(spacing_mm=3.0, valid_sizes_zyx=(z, y, (64,)), smoothing_sigma_mm=2.5)
    contract = segmentation.input_contract()
    assert contract.valid_sizes_zyx == (
        PAPER_SEGMENTATION.valid_sizes_zyx[0],
        PAPER_SEGMENTATION.valid_sizes_zyx[1],
        (64,),
    )
    assert (contract.spacing_mm, contract.smoothing_sigma_mm) == (3.0, 2.5)


def test_a_contract_survives_its_record_and_an_unusable_one_is_refused() -> None:
    assert InputContract.from_record(PAPER_SEGMENTATION.to_record()) == PAPER_SEGMENTATION
    record = PAPER_LOCALIZATION.to_record()
    with pytest.raises(ValueError, match="intensity scale 1000"):
        InputContract.from_record({**record, "intensity_scale_hu": 1000.0})
    with pytest.raises(ValueError, match="not usable"):
        InputContract.from_record({**record, "spacing_mm": 0.0})
    for sizes in ([[32], [], [32]], [[32], [32]], [[32], [32], [-16]]):
        with pytest.raises(ValueError, match="three non-empty lists of positive sizes"):
            InputContract.from_record({**record, "valid_sizes_zyx": sizes})
    with pytest.raises(ValueError, match="unknown InputContract setting"):
        InputContract.from_record({**record, "margin_mm": 10.0})
    assert record["intensity_scale_hu"] == INTENSITY_SCALE_HU


def test_valid_sizes_are_kept_in_ascending_order_as_training_reads_them() -> None:
    """Training's valid-size rule sorts the sizes; inference's (the original's) assumes them sorted."""
    contract = InputContract(2.0, ((160, 32), (64, 32), (96,)), smoothing_sigma_mm=1.0)
    assert contract.valid_sizes_zyx == ((32, 160), (32, 64), (96,))
    assert contract.largest_size_zyx == (160, 64, 96)


def test_a_model_trained_on_other_intensities_has_no_contract_inference_could_honour() -> None:
    data = SegmentationDataConfig(intensity=IntensityAugmentConfig(gamma_range=None, scale=1 / 1000))
    with pytest.raises(ValueError, match="intensity scale 1000 HU; inference scales by 2048 only"):
        data.input_contract()
