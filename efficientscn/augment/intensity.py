"""Intensity augmentation and normalisation of resampled CT patches (NumPy only, any array shape).

Training: random gamma on the patch's own range, then HU / 2048, a random shift, a random scale, clamp to
[-1, 1]. Validation and test: HU / 2048 and the clamp only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from efficientscn.model.contract import INTENSITY_SCALE_HU

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntensityAugmentConfig:
    """Intensity settings, the localization stage's by default (stage 2 sets `gamma_range=None`).

    `gamma_range`: exponent range of the random gamma (None: off). `scale`: fixed factor, HU -> about [-1, 1].
    `random_shift` / `random_scale`: ranges of the added U[±shift] and the factor 1 + U[±scale] (after `scale`).
    `clamp`: final (low, high) bounds, None for none.
    """

    gamma_range: tuple[float, float] | None = (0.8, 1.2)
    scale: float = 1 / INTENSITY_SCALE_HU
    random_shift: float = 0.2
    random_scale: float = 0.2
    clamp: tuple[float, float] | None = (-1.0, 1.0)

    def __post_init__(self) -> None:
        if self.gamma_range is not None and not 0 < self.gamma_range[0] <= self.gamma_range[1]:
            raise ValueError(f"gamma_range must be 0 < low <= high, got {self.gamma_range}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be positive, got {self.scale}")
        if not (self.random_shift >= 0 and 0 <= self.random_scale < 1):
            raise ValueError("random_shift must be >= 0 and random_scale in [0, 1)")
        if self.clamp is not None and not self.clamp[0] < self.clamp[1]:
            raise ValueError(f"clamp must be (low, high) with low < high, got {self.clamp}")


def random_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """`image` min-max normalised to [0, 1], raised to `gamma`, mapped back to its own range (float32).

    The minimum and maximum stay where they were; a constant patch comes back unchanged.
    """
    values = np.asarray(image, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return values.copy()
    normalised = (values - low) / (high - low)
    return (np.power(normalised, gamma, dtype=np.float32) * (high - low) + low).astype(np.float32, copy=False)


def normalize_intensity(image: np.ndarray, config: IntensityAugmentConfig | None = None) -> np.ndarray:
    """The validation/test intensities: `image` x `scale` (HU / 2048), clamped; float32."""
    config = config or IntensityAugmentConfig()
    values = np.asarray(image, dtype=np.float32) * np.float32(config.scale)
    if config.clamp is not None:
        np.clip(values, config.clamp[0], config.clamp[1], out=values)
    return values


def augment_intensity(
    image: np.ndarray, config: IntensityAugmentConfig | None = None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The training intensities of one patch (float32); without `config` or `rng` the same as `normalize_intensity`.

    In order: random gamma (when configured), x `scale`, + U[±random_shift], x (1 + U[±random_scale]), clamp.
    """
    if config is None or rng is None:
        return normalize_intensity(image, config)
    values = np.asarray(image, dtype=np.float32)
    if config.gamma_range is not None:
        values = random_gamma(values, float(rng.uniform(*config.gamma_range)))
    shift = rng.uniform(-config.random_shift, config.random_shift)
    factor = 1 + rng.uniform(-config.random_scale, config.random_scale)
    logger.debug("intensity sample: shift %.3f, factor %.3f", shift, factor)
    values = (values * np.float32(config.scale) + np.float32(shift)) * np.float32(factor)
    if config.clamp is not None:
        np.clip(values, config.clamp[0], config.clamp[1], out=values)
    return values.astype(np.float32, copy=False)
