"""Networks and layers on channels-last tensors (N, z, y, x, C): upsampling, the U-Net, the localization net.

Importing this package imports TensorFlow and Keras; the rest of the library imports it lazily.
"""

from efficientscn.nn.localization import (
    LocalizationNetConfig,
    build_localization_net,
    load_original_localization_weights,
)
from efficientscn.nn.noise import SaltAndPepperNoise
from efficientscn.nn.scn import (
    CombineLocalSpatial,
    SCNConfig,
    SpatialConfiguration,
    build_scn,
    original_scn_variable_keys,
)
from efficientscn.nn.unet import UNet3D, he_normal
from efficientscn.nn.upsample import (
    UpSampling3DCubic,
    UpSampling3DLinear,
    keys_cubic_kernel,
    linear_kernel,
    phase_taps,
    upsample3d,
)
from efficientscn.nn.weights import (
    assign_weights_by_order,
    checkpoint_shapes,
    numbered_variable_keys,
    read_checkpoint_arrays,
)

__all__ = [
    "CombineLocalSpatial",
    "LocalizationNetConfig",
    "SCNConfig",
    "SaltAndPepperNoise",
    "SpatialConfiguration",
    "UNet3D",
    "UpSampling3DCubic",
    "UpSampling3DLinear",
    "assign_weights_by_order",
    "build_localization_net",
    "build_scn",
    "checkpoint_shapes",
    "he_normal",
    "keys_cubic_kernel",
    "linear_kernel",
    "load_original_localization_weights",
    "numbered_variable_keys",
    "original_scn_variable_keys",
    "phase_taps",
    "read_checkpoint_arrays",
    "upsample3d",
]
