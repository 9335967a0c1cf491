"""The set-up command gives a working stack: the pinned TensorFlow runs 3-D convolution on this CPU."""

from __future__ import annotations

import numpy as np


def test_pinned_tensorflow_runs_channels_last_conv3d_on_cpu() -> None:
    import tensorflow as tf

    assert tf.__version__.startswith("2.21.")
    with tf.device("/CPU:0"):
        volume = tf.ones((1, 4, 4, 4, 1))  # (batch, z, y, x, channels): channels-last, as the library uses
        summed = tf.nn.conv3d(volume, tf.ones((3, 3, 3, 1, 1)), strides=[1, 1, 1, 1, 1], padding="SAME")
    values = summed.numpy()[0, ..., 0]
    assert values[0, 0, 0] == 8.0  # a corner sees 2x2x2 voxels
    assert values[1, 1, 1] == 27.0  # an inner voxel sees all 27
    assert np.count_nonzero(values == 27.0) == 8
