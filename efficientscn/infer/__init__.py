"""The engine: one canonical CT in memory -> its label. The original's pre/post-processing tf.functions (`ops`,
`utils_module`), networks from SavedModels (`models`), the two-stage cascade (`pipeline`), frozen graphs and the
cache they live in (`graphs`, `cache`), the process's runtime settings (`runtime`), and the seam through which
models in other formats are imported before loading (`importers`). Imports nothing of training, of the outputs,
of the `predict` batch or of the conversions; `efficientscn.Segmenter` is its face."""
