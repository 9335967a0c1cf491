"""Two-stage inference: pre/post-processing tf.functions, networks, the pipeline."""
