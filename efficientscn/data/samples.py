"""What both stages' sample sources share: a loaded case resampled through a transform into the arrays a network
trains on, augmented for training, only scaled for testing. Each stage says how it loads a case, which transform
maps its grid, and how its labels are encoded.

No TensorFlow here: the sample sources run in the loader's worker processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import SimpleITK as sitk

from efficientscn.augment import augment_intensity, normalize_intensity, resample_image_and_label
from efficientscn.data.layout import FlareDataset
from efficientscn.data.loader import Sample


class LoadedCase(Protocol):
    """A case ready for sampling: its smoothed CT (float32 HU), its label map and the network grid."""

    case: str
    image: sitk.Image
    label: sitk.Image

    @property
    def size_xyz(self) -> tuple[int, int, int]: ...

    @property
    def spacing_xyz(self) -> tuple[float, float, float]: ...


def smooth_ct(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    """The CT as float32, smoothed by a recursive Gaussian of `sigma_mm` (physical units) unless it is 0."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    return sitk.SmoothingRecursiveGaussian(image, sigma_mm) if sigma_mm > 0 else image


Case = TypeVar("Case", bound=LoadedCase)


class SampleSource(ABC, Generic[Case]):
    """A stage's samples of the cases of one dataset folder (picklable, for the loader's workers)."""

    def __init__(self, dataset_root: str | Path, config: Any) -> None:
        self.dataset = FlareDataset(Path(dataset_root))
        self.config = config
        """The stage's data configuration: its `spatial` and `intensity` augmentation among the rest."""

    @abstractmethod
    def load(self, case: str, *, training: bool) -> Case:
        """Read and prepare a case for sampling, for training or for a test."""

    @abstractmethod
    def transform(self, loaded: Case, rng: np.random.Generator | None = None) -> sitk.Transform:
        """The output -> input transform of a case; randomly augmented with `rng`, affine and invertible without."""

    @abstractmethod
    def one_hot(self, label_zyx: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """The resampled label map as the network's one-hot target (z, y, x, C) uint8, for training with `rng`."""

    def arrays(self, loaded: Case, transform: sitk.Transform, rng: np.random.Generator | None = None) -> Sample:
        """The sample of a loaded case through `transform`: image (z, y, x, 1) float32 and the one-hot label.

        With `rng` (training) the transform is sampled once as a dense displacement field for image and label alike
        and the intensities are augmented; without (test), /2048 and the clamp only.
        """
        sampling = self.config.spatial.field_sampling if rng is not None else None
        image, label = resample_image_and_label(
            loaded.image, loaded.label, transform, loaded.size_xyz, loaded.spacing_xyz, sampling
        )
        if rng is None:
            image = normalize_intensity(image, self.config.intensity)
        else:
            image = augment_intensity(image, self.config.intensity, rng)
        return {"image": image[..., np.newaxis].astype(np.float32), "label": self.one_hot(label, rng)}

    def sample(self, case: str, rng: np.random.Generator) -> Sample:
        """A randomly augmented training sample."""
        loaded = self.load(case, training=True)
        return self.arrays(loaded, self.transform(loaded, rng), rng)

    def test_sample(self, case: str) -> tuple[Case, sitk.Transform, Sample]:
        """The unaugmented sample of a case, with the loaded case and the transform to map predictions back: a
        prediction (z, y, x, C) goes onto the CT with `imaging.resample.resample_to_input(prediction, transform,
        loaded.spacing_xyz, loaded.label)`."""
        loaded = self.load(case, training=False)
        transform = self.transform(loaded)
        return loaded, transform, self.arrays(loaded, transform)
