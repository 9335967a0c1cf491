#!/bin/sh
# FLARE21-style inference in the Docker image: every CT in /workspace/inputs -> its label in /workspace/outputs.
# POSIX sh, as the challenge runs it (`sh predict.sh`: dash in Debian and Ubuntu images); extra arguments go to
# `efficientscn predict`. The folders can be changed through INPUT_DIR, OUTPUT_DIR and MODELS_DIR (the tests do),
# the command through EFFICIENTSCN (default: the efficientscn command on the PATH).
set -eu
# as the original: allocate GPU memory as needed
TF_GPU_ALLOCATOR="${TF_GPU_ALLOCATOR:-cuda_malloc_async}"
export TF_GPU_ALLOCATOR
exec "${EFFICIENTSCN:-efficientscn}" predict \
    -i "${INPUT_DIR:-/workspace/inputs}" \
    -o "${OUTPUT_DIR:-/workspace/outputs}" \
    --models "${MODELS_DIR:-/workspace/saved_models}" \
    "$@"
