"""`efficientscn predict`: a batch of CTs segmented case by case, resumable, shared safely between runs.

`run` orchestrates; `cases` finds the CTs and names their outputs, `resume` decides which cases this run does,
`locks` keeps two runs off one case, `read_ahead` reads the next CT while one is segmented, `plausibility` gates
inputs and results, `monitor` measures and reports."""

from efficientscn.predict.run import PredictOptions, predict

__all__ = ["PredictOptions", "predict"]
