"""Export a trained localization run as `saved_models/localization` (the original's SavedModel interface).

Edit the run folder and iteration below, or pass flags: `--run`, `--iter`, `--output`, `--overwrite`.
"""

import sys

load_model_base = "/SET/PATH/TO/OUTPUT/localization/cv0/TIMESTAMP"  # a run folder written by localization/main.py
load_model_iter = 100_000  # the checkpoint iteration to export
output_folder = "saved_models/localization"

if __name__ == "__main__":
    from efficientscn.cli import run_script

    settings = {"--run": load_model_base, "--iter": load_model_iter, "--output": output_folder}
    sys.exit(run_script(["export", "localization"], settings))
