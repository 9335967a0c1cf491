"""`efficientscn predict`: a batch of CTs segmented case by case, resumable, shared safely between runs.

`plan` decides what a batch is made of and `case_runner` does one case's work, the same wherever it runs: `run`
orchestrates a batch in this process, `cluster` on a Dask cluster (the workers' side in `cluster_worker`), and
`shards` splits a batch for array jobs and merges their reports. `cases` finds the CTs and names their outputs,
`resume` decides which cases this run does, `locks` keeps two runs off one case, `read_ahead` reads the next CT while
one is segmented, `plausibility` gates inputs and results, `monitor` measures and reports.

`from efficientscn.predict import PredictOptions, predict` loads `run` (and TensorFlow) on first use only, so that
the command line reads the other modules before it has set TensorFlow's environment up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from efficientscn.predict.options import PredictOptions
    from efficientscn.predict.run import predict

__all__ = ["PredictOptions", "predict"]


def __getattr__(name: str) -> object:
    if name == "PredictOptions":
        from efficientscn.predict.options import PredictOptions

        return PredictOptions
    if name == "predict":
        from efficientscn.predict.run import predict

        return predict
    raise AttributeError(f"module 'efficientscn.predict' has no attribute {name!r}")
