"""Export a trained SCN run as `saved_models/segmentation` (the original's SavedModel interface).

Edit the run folder and iteration below, or pass flags: `--run`, `--iter`, `--output`, `--overwrite`.
"""

import sys

load_model_base = "/SET/PATH/TO/OUTPUT/segmentation/cv0/TIMESTAMP"  # a run folder written by scn/main.py
load_model_iter = 100_000  # the checkpoint iteration to export
output_folder = "saved_models/segmentation"

if __name__ == "__main__":
    from efficientscn.cli import run_script

    settings = {"--run": load_model_base, "--iter": load_model_iter, "--output": output_folder}
    sys.exit(run_script(["export", "scn"], settings))
