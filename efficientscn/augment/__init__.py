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
    CT_OUTSIDE_HU,
    SpatialAugmentConfig,
    field_grid,
    image_center,
    labels_on_input,
    output_center,
    resample,
    resample_image_and_label,
    resample_to_input,
    sample_transform,
    to_displacement_field,
)

__all__ = [
    "CT_OUTSIDE_HU",
    "IntensityAugmentConfig",
    "SpatialAugmentConfig",
    "augment_intensity",
    "field_grid",
    "image_center",
    "labels_on_input",
    "normalize_intensity",
    "output_center",
    "random_gamma",
    "resample",
    "resample_image_and_label",
    "resample_to_input",
    "sample_transform",
    "to_displacement_field",
]
