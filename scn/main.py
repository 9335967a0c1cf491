"""Train the SpatialConfiguration-Net per cross-validation fold (see README, "Training").

Edit the folders below, or pass flags: `--cv 1 2 3 4` (the default), `--cv 0` for the network trained on all
cases, `--max-iter`, `--test-iter`, `--resume`, `--dataset`, `--output`; `--help` lists them all.
"""

import sys

base_dataset_folder = "/SET/PATH/TO/DATASET"  # preprocessed FLARE layout: TrainingImg/, TrainingMask/, setup/
base_output_folder = "/SET/PATH/TO/OUTPUT"  # runs go to <this>/segmentation/cv<k>/<timestamp>/

if __name__ == "__main__":
    from efficientscn.cli import run_script

    sys.exit(run_script(["train", "scn"], {"--dataset": base_dataset_folder, "--output": base_output_folder}))
