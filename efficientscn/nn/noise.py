"""Multi-scale salt-and-pepper noise on channels-last probability maps (N, z, y, x, C), active in training only.

Stage 2 perturbs the pooled local-appearance probabilities with it before the spatial-configuration sub-nets
see them, so that they learn to correct wrong or missing local evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from efficientscn.nn.upsample import linear_kernel, upsample3d


@keras.saving.register_keras_serializable(package="efficientscn")
class SaltAndPepperNoise(keras.layers.Layer):
    """Salt-and-pepper noise (N, z, y, x, C) -> (N, z, y, x, C), same dtype; the identity unless training.

    As the original (MDAT's `salt_pepper_3D`): for every scale s in `scales`, in that order, one uniform number u
    per batch item, coarse voxel and channel is drawn on a grid of size / s voxels per axis (ceil, so any size
    works; the SCN's pooled sizes are multiples of 8); u >= 1 - rate/2 marks salt and u < rate/2 pepper. Both
    binary masks are upsampled by s with the separable linear interpolation of `UpSampling3DLinear` (half-pixel
    centres, edge replicate) and cropped to the input size, giving soft masks q (salt) and p (pepper) in [0, 1],
    then

        x <- (1 - (1 - x) * (1 - q)) * (1 - p)     (salt pulls x towards 1, then pepper towards 0)

    So at scale 1 exactly the marked values become 1 or 0 (about `rate` of them), at scale s soft blobs of about
    s^3 voxels are pulled to 1 or 0, where the soft edges of both overlap pepper acts last, and inputs in [0, 1]
    stay in [0, 1]. The random numbers are float32 (the original draws them in the compute dtype:
    docs/fidelity.md #17); the masks are cast to the input dtype.
    """

    def __init__(self, rate: float = 0.01, scales: Sequence[int] = (1, 2, 4, 8), seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"salt-and-pepper rate must lie in [0, 1], got {rate}")
        if any(int(s) != s or s < 1 for s in scales):
            raise ValueError(f"salt-and-pepper scales must be positive integers, got {tuple(scales)}")
        self.rate = float(rate)
        self.scales = tuple(int(s) for s in scales)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _masks(self, shape: tf.Tensor, scale: int, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
        """Pepper and salt masks of the full `shape` (N, z, y, x, C), drawn at 1/`scale` resolution."""
        spatial = shape[1:4]
        coarse = tf.concat([shape[:1], (spatial + scale - 1) // scale, shape[4:]], axis=0)
        uniform = keras.random.uniform(coarse, dtype="float32", seed=self.seed_generator)
        masks = []
        for marked in (uniform < self.rate / 2, uniform >= 1.0 - self.rate / 2):
            mask = upsample3d(tf.cast(marked, dtype), scale, linear_kernel, 1)
            masks.append(mask[:, : spatial[0], : spatial[1], : spatial[2], :])
        return masks[0], masks[1]

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training or self.rate == 0.0:
            return inputs
        x = inputs
        shape = tf.shape(x)
        for scale in self.scales:
            pepper, salt = self._masks(shape, scale, x.dtype)
            x = (1 - (1 - x) * (1 - salt)) * (1 - pepper)
        return tf.ensure_shape(x, inputs.shape)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "scales": self.scales, "seed": self.seed}
