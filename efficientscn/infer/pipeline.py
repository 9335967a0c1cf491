"""The two-stage segmentation of one CT: 6 mm localization, organ box + 10 mm, 2 mm SCN, label on the CT grid.

The steps and constants are the original's inference; the spacings, valid sizes and smoothing are each network's
input contract (the paper's: 6 mm and 2 mm). The pre/post-processing runs through the functions of `ops` as
frozen graphs (`utils_module.PipelineFunctions`) or through a traced `tf_utils_module` (ours or the original's),
the networks through `models.Network`.
Everything happens on the canonical (LPS) grid; the caller maps the label back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import check_voxel_count
from efficientscn.imaging.geometry import SpacingFallback
from efficientscn.infer import ops
from efficientscn.infer.models import Network
from efficientscn.infer.runtime import SLAB_BUDGET_BYTES, max_voxels_for_memory
from efficientscn.infer.utils_module import PipelineFunctions, Utils
from efficientscn.model.contract import InputContract

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceConfig:
    """How inference treats a scan, whatever the networks; the networks' own input comes from their contracts."""

    localization_growth_margin: float = 0.02
    """Added to the ratio of a scan's localization size to the largest input before it is tested against 1, as the
    original (docs/fidelity.md #11)."""
    segmentation_growth_margin_mm: float = 0.1
    """A box too large for the largest input at its spacing is segmented at (its largest spacing + this)."""
    min_extent_mm: float = 30.0
    """Shorter CTs are refused: 5 voxels of the 6 mm localization grid along an axis (a 20-slice 2 mm scan passes)."""
    max_voxels: int | None = None
    """Larger CTs are refused, up front, instead of exhausting memory; None: what this machine's memory takes by
    the memory model for the networks as they run (`slab_budget_bytes`), at most a 512 x 512 x 4096 scan
    (`runtime.max_voxels_for_memory`). Always an int once made."""
    spacing_fallback: SpacingFallback = "missing"
    """When a spacing of exactly 1,1,1 mm is taken for a missing one (see `imaging.geometry.SPACING_FALLBACKS`)."""
    slab_budget_bytes: int | None = SLAB_BUDGET_BYTES
    """Rebuilt networks run their full-resolution levels by z-slabs fitting this budget (`efficientscn.nn.slabs`):
    the same labels in a fraction of the memory; None runs them whole."""

    def __post_init__(self) -> None:
        if self.max_voxels is None:
            limit = max_voxels_for_memory(slabs=self.slab_budget_bytes is not None)
            object.__setattr__(self, "max_voxels", limit)


def localization_spacing(
    size_zyx: Sequence[int], spacing_zyx: Sequence[float], contract: InputContract, config: InferenceConfig
) -> np.ndarray:
    """The localization spacing: the contract's (6 mm), grown on all axes alike so the whole scan fits the largest
    input."""
    largest = np.array(contract.largest_size_zyx)
    expected = np.ceil(np.asarray(size_zyx) * np.asarray(spacing_zyx) / contract.spacing_mm)
    ratio = float(np.max(expected / largest)) + config.localization_growth_margin
    return np.full(3, contract.spacing_mm, np.float32) * np.float32(max(ratio, 1.0))


def segmentation_spacing(
    box_start: np.ndarray, box_end: np.ndarray, contract: InputContract, config: InferenceConfig
) -> np.ndarray:
    """The segmentation spacing: the contract's (2 mm), or isotropically coarser when the box does not fit the
    largest input."""
    largest = np.array(contract.largest_size_zyx)
    needed = float(np.max((np.asarray(box_end) - np.asarray(box_start)) / largest))
    spacing = contract.spacing_mm
    if needed > spacing - config.segmentation_growth_margin_mm:
        spacing = needed + config.segmentation_growth_margin_mm
    return np.full(3, spacing, np.float32)


def check_processable(size_zyx: Sequence[int], spacing_zyx: Sequence[float], config: InferenceConfig) -> None:
    """Refuse a CT the pipeline cannot process, with the reason, before any work.

    Too small: less than `min_extent_mm` along an axis, a few voxels of the localization grid, which then sees
    little but padding (a 3-slice scan, for example). Too large: more than `max_voxels`.
    """
    check_voxel_count(size_zyx, config.max_voxels)
    for axis, size, spacing in zip("zyx", size_zyx, spacing_zyx, strict=True):
        if size * spacing < config.min_extent_mm:
            raise InputError(
                f"CT too small for the networks: {size} voxel(s) of {spacing:g} mm along {axis} cover "
                f"{size * spacing:g} mm; at least {config.min_extent_mm:g} mm are needed"
            )


@dataclass
class Segmentation:
    """The label of one CT on its canonical grid, and what the two stages did."""

    label: np.ndarray
    """uint8 zyx on the canonical grid."""
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def _constant(values: Sequence[float] | np.ndarray, dtype: tf.DType) -> tf.Tensor:
    return tf.constant(np.asarray(values), dtype)


class Pipeline:
    """Both networks and the utils module, loaded once, applied to one canonical CT after another."""

    def __init__(
        self,
        localization: Network,
        segmentation: Network,
        utils: Utils | PipelineFunctions,
        config: InferenceConfig | None = None,
    ) -> None:
        self.localization = localization
        self.segmentation = segmentation
        self.utils = utils
        self.config = config or InferenceConfig()

    def segment(self, ct_zyx: np.ndarray, spacing_zyx: Sequence[float], *, require_organs: bool = True) -> Segmentation:
        """Segment a canonical int16 CT (zyx array, spacing in mm zyx) that `check_processable` accepts (the caller
        checks, once per case).

        Raises InputError if the localization finds no organ, unless `require_organs` is False: the SCN then
        segments the box of the whole CT, as the original does (docs/fidelity.md #34).
        """
        config = self.config
        result = Segmentation(label=np.empty(0, np.uint8))
        start_time = time.perf_counter()
        steps = _Steps(self.utils, ct_zyx, spacing_zyx)

        # per CT: the original keeps a grown spacing for the rest of its batch (docs/fidelity.md #33)
        localization = self.localization.contract
        coarse_spacing = localization_spacing(ct_zyx.shape, spacing_zyx, localization, config)
        inputs, paddings = steps.localization_input(coarse_spacing, localization)
        mask = self.localization.run(inputs)
        if require_organs and not bool(tf.reduce_any(mask)):  # the original goes on (docs/fidelity.md #34)
            raise InputError("no organs found: the localization network marked no voxel of this CT")
        box_end, box_start = self.utils.bbox_from_localization_output(
            mask, _constant(coarse_spacing, tf.float32), paddings
        )
        result.seconds["localization"] = time.perf_counter() - start_time
        result.details.update(
            localization_spacing_mm=coarse_spacing.tolist(),
            localization_input_zyx=list(inputs.shape[2:]),
            box_start_mm=box_start.numpy().tolist(),
            box_end_mm=box_end.numpy().tolist(),
        )
        del inputs, mask

        start_time = time.perf_counter()
        segmentation = self.segmentation.contract
        fine_spacing = segmentation_spacing(box_start.numpy(), box_end.numpy(), segmentation, config)
        inputs, cropped_size, croppings, paddings = steps.segmentation_input(
            fine_spacing, box_end, box_start, segmentation
        )
        probabilities = self.segmentation.run(inputs)
        result.details.update(
            segmentation_spacing_mm=fine_spacing.tolist(), segmentation_input_zyx=list(inputs.shape[2:])
        )
        del inputs
        result.label = steps.label(probabilities, paddings, croppings, cropped_size)
        result.seconds["segmentation"] = time.perf_counter() - start_time
        return result


LOCALIZATION_SLAB = 32
"""CT slices converted to float16 and resized in-plane at once for the localization input."""
SEGMENTATION_SLAB = 32
"""CT slices of the organ box converted to float16, smoothed and resized in-plane at once for the SCN input (plus
the smoothing's reach): a box spanning a whole-body scan never exists in float at the CT's resolution."""


class _Steps:
    """The pre- and post-processing of one CT through the utils functions.

    With `PipelineFunctions` the int16 CT stays the only full-resolution copy: it is converted to float16 a slab of
    slices at a time for the localization input and a slab of its box region at a time for the segmentation input,
    and the label is filled in slab by slab where the box lies. Any other utils module (the original's interface)
    gets the whole CT in float16, once. Both give the same values (tests/infer/test_pipeline.py).
    """

    def __init__(self, utils: Utils | PipelineFunctions, ct_zyx: np.ndarray, spacing_zyx: Sequence[float]) -> None:
        self.utils = utils
        self.lean = isinstance(utils, PipelineFunctions)
        self.ct_zyx = ct_zyx
        self.spacing = _constant(spacing_zyx, tf.float32)
        self._whole: tf.Tensor | None = None

    def _whole_image(self) -> tf.Tensor:
        """The CT as a float16 [1, 1, D, H, W] tensor, as the original's interface takes it."""
        if self._whole is None:
            self._whole = _as_image(self.ct_zyx)
        return self._whole

    def localization_input(self, coarse_spacing: np.ndarray, contract: InputContract) -> tuple[tf.Tensor, tf.Tensor]:
        """(input, paddings) of the localization network."""
        valid_sizes = _valid_sizes(contract)
        if not self.lean or contract.smoothing_sigma_mm > 0:  # smoothing needs the neighbouring slices
            return self.utils.preprocess_for_localization(
                self._whole_image(),
                self.spacing,
                _constant(coarse_spacing, tf.float32),
                tf.constant(contract.smoothing_sigma_mm, tf.float32),  # the paper's: 0 (docs/fidelity.md #3)
                *valid_sizes,
            )
        assert isinstance(self.utils, PipelineFunctions)
        size = ops.size_for_spacing(
            _constant(self.ct_zyx.shape, tf.int32), self.spacing, _constant(coarse_spacing, tf.float32)
        )
        resize_planes = self.utils.step("resize_planes")
        planes = [
            resize_planes(_as_image(self.ct_zyx[first : first + LOCALIZATION_SLAB]), size[1:3])
            for first in range(0, self.ct_zyx.shape[0], LOCALIZATION_SLAB)
        ]
        return self.utils.step("localization_input_from_planes")(tf.concat(planes, axis=2), size, *valid_sizes)

    def segmentation_input(
        self, fine_spacing: np.ndarray, box_end: tf.Tensor, box_start: tf.Tensor, contract: InputContract
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(input, cropped_size, croppings, paddings) of the segmentation network."""
        arguments = (
            self.spacing,
            _constant(fine_spacing, tf.float32),
            box_end,
            box_start,
            tf.constant(contract.smoothing_sigma_mm, tf.float32),
            *_valid_sizes(contract),
        )
        if not self.lean:
            result = self.utils.preprocess_for_segmentation(self._whole_image(), *arguments)
            self._whole = None  # the CT in float16 is no longer needed
            return result
        assert isinstance(self.utils, PipelineFunctions)
        size = _constant(self.ct_zyx.shape, tf.int32)
        begin, end, reach = (bound.numpy() for bound in self.utils.step("segmentation_box_voxels")(size, *arguments))
        first, last = np.maximum(begin - reach, 0), np.minimum(end + reach, self.ct_zyx.shape)
        planes_of = self.utils.step("segmentation_planes")
        planes = []
        for slab_begin in range(begin[0], end[0], SEGMENTATION_SLAB):
            slab_end = min(slab_begin + SEGMENTATION_SLAB, end[0])
            region_begin = np.array([max(slab_begin - reach[0], 0), first[1], first[2]])
            region_end = np.array([min(slab_end + reach[0], self.ct_zyx.shape[0]), last[1], last[2]])
            region = _as_image(self.ct_zyx[tuple(map(slice, region_begin, region_end))])
            slab = tf.constant(slab_begin, tf.int32), tf.constant(slab_end, tf.int32)
            planes.append(planes_of(region, _constant(region_begin, tf.int32), *slab, size, *arguments))
        return self.utils.step("segmentation_input_from_planes")(tf.concat(planes, axis=2), size, *arguments)

    def label(
        self, probabilities: tf.Tensor, paddings: tf.Tensor, croppings: tf.Tensor, cropped_size: tf.Tensor
    ) -> np.ndarray:
        """The uint8 label zyx on the CT's grid."""
        if not self.lean:
            label = self.utils.postprocess_for_segmentation(probabilities, paddings, croppings, cropped_size)
            return label.numpy()[0, 0]
        assert isinstance(self.utils, PipelineFunctions)
        label = np.zeros(self.ct_zyx.shape, np.uint8)
        first = croppings.numpy()[:, 0]
        kept_begin = int(paddings.numpy()[0, 0])
        kept_end = int(cropped_size.numpy()[0] - paddings.numpy()[0, 1])
        label_slab = self.utils.step("box_label_slab")
        slab_begin = kept_begin
        while slab_begin < kept_end:  # slabs as deep as the traced step makes them
            slab = label_slab(probabilities, paddings, cropped_size, tf.constant(slab_begin, tf.int32)).numpy()[0, 0]
            start = first + np.array([slab_begin - kept_begin, 0, 0])
            label[tuple(slice(begin, begin + length) for begin, length in zip(start, slab.shape, strict=True))] = slab
            slab_begin += slab.shape[0]
        return label


def _as_image(ct_zyx: np.ndarray) -> tf.Tensor:
    """(Part of) an int16 CT as the float16 [1, 1, D, H, W] tensor the utils functions take.

    TensorFlow's cast gives NumPy's values (every int16 is exact in float32, then rounded to nearest even) in less
    than half NumPy's time: 0.05 s where NumPy takes 0.1 s for a 512 x 512 x 150 CT.
    """
    return tf.cast(tf.constant(ct_zyx[np.newaxis, np.newaxis]), tf.float16)


def _valid_sizes(contract: InputContract) -> list[tf.Tensor]:
    return [_constant(axis_sizes, tf.int32) for axis_sizes in contract.valid_sizes_zyx]  # z first, by position
