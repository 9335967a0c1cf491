"""Preprocess a FLARE-layout dataset: `_small` images and masks, setup/landmark_bb.csv, setup/cv splits.

The original's workflow: set `base_dataset_folder` below, or pass --dataset, and run this script. Every flag of
`efficientscn preprocess` works here too; see `python preprocessing/preprocessing.py --help`.
"""

import sys

base_dataset_folder = "/SET/PATH/TO/DATASET"  # FLARE layout: TrainingImg/, TrainingMask/, ValidationImg/

if __name__ == "__main__":
    from efficientscn.cli import main

    # the folder above is the default; flags given on the command line come after it and override it
    default = [] if base_dataset_folder.startswith("/SET/PATH") else ["--dataset", base_dataset_folder]
    sys.exit(main(["preprocess", *default, *sys.argv[1:]]))
