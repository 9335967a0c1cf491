"""Training: the stages and their run configurations, losses, the generic loop (weight average, clipping,
precision, checkpoints, tests, logs), runs.

`stages` and `config` are TensorFlow-free (the command line reads them); the other modules import TensorFlow.
"""
