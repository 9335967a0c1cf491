"""Two-stage inference: the original's pre/post-processing tf.functions (`ops`, `utils_module`), networks from
SavedModels (`models`), the pipeline, and the `predict` batch with its cases, writers and monitoring. Imports
nothing of training."""
