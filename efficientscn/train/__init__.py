"""Training: losses, the generic loop (weight average, clipping, precision, checkpoints, tests, logs), the stages.

Importing a module of this package imports TensorFlow; the rest of the library imports it lazily.
"""
