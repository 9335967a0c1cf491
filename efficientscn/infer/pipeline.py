"""The two-stage segmentation of one CT: 6 mm localization, organ box + 10 mm, 2 mm SCN, label on the CT grid.

The steps and constants are the original's inference (upstream-facts section 8); the pre/post-processing runs
through the utils module (`ops.UtilsModule` or a traced `tf_utils_module`, ours or the original's), the networks
through `models.Network`. Everything happens on the canonical (LPS) grid; the caller maps the label back.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from efficientscn.data.localization import LocalizationDataConfig
from efficientscn.data.scn import SCNDataConfig
from efficientscn.errors import InputError
from efficientscn.infer.models import Network

logger = logging.getLogger(__name__)

_LOCALIZATION, _SCN = LocalizationDataConfig(), SCNDataConfig()


@dataclass(frozen=True)
class InferenceConfig:
    """The original's inference constants; all sizes and spacings are in z, y, x order."""

    localization_spacing_mm: float = 6.0
    localization_valid_sizes: tuple[tuple[int, ...], ...] = (
        _LOCALIZATION.valid_sizes_z,
        _LOCALIZATION.valid_sizes_xy,
        _LOCALIZATION.valid_sizes_xy,
    )
    """The training data's valid sizes (z, y, x): what the networks were trained on."""
    localization_growth_margin: float = 0.02
    """Added to the ratio of a scan's 6 mm size to the largest input before it is tested against 1, as the
    original (docs/fidelity.md #11)."""
    segmentation_spacing_mm: float = 2.0
    segmentation_valid_sizes: tuple[tuple[int, ...], ...] = (
        _SCN.valid_sizes_z,
        _SCN.valid_sizes_y,
        _SCN.valid_sizes_x,
    )
    segmentation_growth_margin_mm: float = 0.1
    """A box too large for the largest input at 2 mm is segmented at (its largest spacing + this), isotropic."""
    smoothing_sigma_mm: float = 1.0
    """Gaussian smoothing of the CT before the 2 mm resize (the localization input is not smoothed)."""
    min_extent_mm: float = 30.0
    """Shorter CTs are refused: 5 voxels of the 6 mm localization grid along an axis (a 20-slice 2 mm scan passes)."""
    max_voxels: int = 1024 * 1024 * 1024
    """Larger CTs are refused instead of exhausting memory (a 512 x 512 x 4096 scan is still accepted)."""


def localization_spacing(size_zyx: Sequence[int], spacing_zyx: Sequence[float], config: InferenceConfig) -> np.ndarray:
    """The localization spacing: 6 mm, grown on all axes alike so the whole scan fits the largest input."""
    largest = np.array([max(sizes) for sizes in config.localization_valid_sizes])
    expected = np.ceil(np.asarray(size_zyx) * np.asarray(spacing_zyx) / config.localization_spacing_mm)
    ratio = float(np.max(expected / largest)) + config.localization_growth_margin
    return np.full(3, config.localization_spacing_mm, np.float32) * np.float32(max(ratio, 1.0))


def segmentation_spacing(box_start: np.ndarray, box_end: np.ndarray, config: InferenceConfig) -> np.ndarray:
    """The segmentation spacing: 2 mm, or isotropically coarser when the box does not fit the largest input."""
    largest = np.array([max(sizes) for sizes in config.segmentation_valid_sizes])
    needed = float(np.max((np.asarray(box_end) - np.asarray(box_start)) / largest))
    spacing = config.segmentation_spacing_mm
    if needed > spacing - config.segmentation_growth_margin_mm:
        spacing = needed + config.segmentation_growth_margin_mm
    return np.full(3, spacing, np.float32)


def check_voxel_count(size: Sequence[int], config: InferenceConfig) -> None:
    """Refuse a CT of more than `max_voxels` (any axis order), before it is read where the header tells."""
    voxels = math.prod(size)
    if voxels > config.max_voxels:
        raise InputError(f"CT too large: {voxels:,} voxels (size {tuple(size)}); the limit is {config.max_voxels:,}")


def check_processable(size_zyx: Sequence[int], spacing_zyx: Sequence[float], config: InferenceConfig) -> None:
    """Refuse a CT the pipeline cannot process, with the reason, before any work.

    Too small: less than `min_extent_mm` along an axis, a few voxels of the localization grid, which then sees
    little but padding (a 3-slice scan, for example). Too large: more than `max_voxels`.
    """
    check_voxel_count(size_zyx, config)
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


class Segmenter:
    """Both networks and the utils module, loaded once, applied to one canonical CT after another."""

    def __init__(
        self,
        localization: Network,
        segmentation: Network,
        utils: Any,
        config: InferenceConfig | None = None,
    ) -> None:
        self.localization = localization
        self.segmentation = segmentation
        self.utils = utils
        self.config = config or InferenceConfig()

    def _valid_sizes(self, sizes: tuple[tuple[int, ...], ...]) -> list[tf.Tensor]:
        return [_constant(axis_sizes, tf.int32) for axis_sizes in sizes]  # z first: they pair by position

    def segment(self, ct_zyx: np.ndarray, spacing_zyx: Sequence[float]) -> Segmentation:
        """Segment a canonical int16 CT (zyx array, spacing in mm zyx); raises InputError if no organ is found."""
        check_processable(ct_zyx.shape, spacing_zyx, self.config)
        return self._run(ct_zyx, spacing_zyx, require_organs=True)

    def warm_up(self) -> None:
        """Trace every function and network once on a small blank CT, so that the first real case runs at speed.

        The traces fit any size: the functions and our networks take unknown spatial sizes. (A network run through
        a SavedModel signature under XLA still compiles once per new input size.)
        """
        start_time = time.perf_counter()
        self._run(np.full((48, 48, 48), -1000, np.int16), (6.0, 6.0, 6.0), require_organs=False)
        logger.info("traced the pipeline in %.1f s", time.perf_counter() - start_time)

    def _run(self, ct_zyx: np.ndarray, spacing_zyx: Sequence[float], *, require_organs: bool) -> Segmentation:
        config = self.config
        result = Segmentation(label=np.empty(0, np.uint8))
        start_time = time.perf_counter()
        image = tf.constant(ct_zyx.astype(np.float16)[np.newaxis, np.newaxis])
        spacing = _constant(spacing_zyx, tf.float32)

        # per CT: the original keeps a grown spacing for the rest of its batch (docs/fidelity.md #33)
        coarse_spacing = localization_spacing(ct_zyx.shape, spacing_zyx, config)
        inputs, paddings = self.utils.preprocess_for_localization(
            image,
            spacing,
            _constant(coarse_spacing, tf.float32),
            tf.constant(0.0),  # the original localizes on the unsmoothed CT (docs/fidelity.md #3)
            *self._valid_sizes(config.localization_valid_sizes),
        )
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
        fine_spacing = segmentation_spacing(box_start.numpy(), box_end.numpy(), config)
        inputs, cropped_size, croppings, paddings = self.utils.preprocess_for_segmentation(
            image,
            spacing,
            _constant(fine_spacing, tf.float32),
            box_end,
            box_start,
            tf.constant(config.smoothing_sigma_mm, tf.float32),
            *self._valid_sizes(config.segmentation_valid_sizes),
        )
        del image
        probabilities = self.segmentation.run(inputs)
        result.details.update(
            segmentation_spacing_mm=fine_spacing.tolist(), segmentation_input_zyx=list(inputs.shape[2:])
        )
        del inputs
        label = self.utils.postprocess_for_segmentation(probabilities, paddings, croppings, cropped_size)
        result.label = label.numpy()[0, 0]
        result.seconds["segmentation"] = time.perf_counter() - start_time
        return result
