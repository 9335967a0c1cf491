# GPU image for FLARE21-style inference: docker run --gpus all -v IN:/workspace/inputs -v OUT:/workspace/outputs IMAGE
# Build from the repository root: docker build -t efficientscn . (the shipped demonstration models;
# --build-arg MODELS=saved_models, or another folder holding localization/ and segmentation/, for your own)
FROM tensorflow/tensorflow:2.21.0-gpu

ARG MODELS=submitted_saved_models
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/efficientscn
COPY pyproject.toml README.md LICENSE ./
COPY efficientscn ./efficientscn
# the base image's TensorFlow 2.21 (with its CUDA libraries) satisfies the package's pin and is kept
RUN python3 -m pip install .

WORKDIR /workspace
COPY ${MODELS} /workspace/saved_models
COPY predict.sh /workspace/predict.sh
CMD ["bash", "predict.sh"]
