"""Networks and layers on channels-last tensors (N, z, y, x, C): upsampling (`upsample`), the U-Net (`unet`), the
localization net (`localization`), the SCN (`scn`), salt-and-pepper noise (`noise`), weights by order (`weights`),
and the networks' configurations (`config`, without TensorFlow).

Import the modules themselves: this face imports nothing, so that reading a configuration loads no TensorFlow.
"""
