"""Segment a folder of CTs with the exported models (the original's inference script, driven by flags).

Edit the folders below, or pass flags: `-i/--input`, `-o/--output`, `--models`, `--device`, `--overwrite`,
`--preview`, `--report` (all of `efficientscn predict --help`). Unlike the original, labels go straight into the
output folder (no timestamped sub-folder), so a second run skips the cases already done.
"""

from pathlib import Path

input_folder = "/SET/PATH/TO/INPUTS"  # CTs: *_0000.nii.gz (or any readable CT file) and DICOM folders
output_folder = "/SET/PATH/TO/OUTPUTS"  # <case>.nii.gz label maps
# as the original: the models the main_create_model.py scripts export to saved_models/; where there are none yet,
# the shipped demonstration models (predict then warns that they are not for use)
repository = Path(__file__).resolve().parents[1]
exported = repository / "saved_models"
models_folder = str(exported if exported.is_dir() else repository / "submitted_saved_models")

if __name__ == "__main__":
    from efficientscn.cli import exit_with, run_script

    settings = {"--input": input_folder, "--output": output_folder, "--models": models_folder}
    exit_with(run_script(["predict"], settings))
