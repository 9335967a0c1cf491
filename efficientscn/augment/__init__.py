"""Data augmentation for training samples: spatial (SimpleITK transforms, resampling) and intensity (NumPy).

NumPy and SimpleITK only, never TensorFlow: this package runs inside data-loader worker processes.
"""

from efficientscn.augment.intensity import (
    IntensityAugmentConfig,
    augment_intensity,
    normalize_intensity,
    random_gamma,
)
from efficientscn.augment.spatial import (
    SpatialAugmentConfig,
    field_grid,
    image_center,
    output_center,
    resample,
    resample_image_and_label,
    sample_transform,
    to_displacement_field,
)

__all__ = [
    "IntensityAugmentConfig",
    "SpatialAugmentConfig",
    "augment_intensity",
    "field_grid",
    "image_center",
    "normalize_intensity",
    "output_center",
    "random_gamma",
    "resample",
    "resample_image_and_label",
    "sample_transform",
    "to_displacement_field",
]
