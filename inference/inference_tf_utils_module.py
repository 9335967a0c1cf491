"""Trace the pre/post-processing functions as `saved_models/tf_utils_module` (the original's tf_utils_module).

Inference does not need this folder (it calls `efficientscn.infer.ops` directly); it is for tools that load the
original's traced module, and for comparing the two. Edit the folder below, or pass `--output`, `--overwrite`.
"""

import sys

output_folder = "saved_models/tf_utils_module"

if __name__ == "__main__":
    from efficientscn.cli import run_script

    sys.exit(run_script(["trace-utils"], {"--output": output_folder}))
