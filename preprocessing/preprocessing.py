"""Preprocess a FLARE-layout dataset: `_small` images and masks, setup/landmark_bb.csv, setup/cv splits.

The original's workflow: set `base_dataset_folder` below, or pass --dataset, and run this script. Every flag of
`efficientscn preprocess` works here too; see `python preprocessing/preprocessing.py --help`.
"""

import sys

base_dataset_folder = "/SET/PATH/TO/DATASET"  # FLARE layout: TrainingImg/, TrainingMask/, ValidationImg/

if __name__ == "__main__":
    from efficientscn.cli import run_script

    sys.exit(run_script(["preprocess"], {"--dataset": base_dataset_folder}))
