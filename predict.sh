#!/usr/bin/env bash
# FLARE21-style inference in the Docker image: every CT in /workspace/inputs -> its label in /workspace/outputs.
# The folders can be changed through INPUT_DIR, OUTPUT_DIR and MODELS_DIR (the tests do), the command through
# EFFICIENTSCN (default: the efficientscn command on the PATH).
set -euo pipefail
export TF_GPU_ALLOCATOR="${TF_GPU_ALLOCATOR:-cuda_malloc_async}"  # as the original: allocate GPU memory as needed
exec "${EFFICIENTSCN:-efficientscn}" predict \
    -i "${INPUT_DIR:-/workspace/inputs}" \
    -o "${OUTPUT_DIR:-/workspace/outputs}" \
    --models "${MODELS_DIR:-/workspace/saved_models}" \
    "$@"
