# The challenge image: `sh predict.sh` segments every CT in /workspace/inputs into /workspace/outputs (FLARE21).
# GPU (default base):  docker build -t efficientscn .
# CPU:                 docker build --build-arg BASE=python:3.11-slim -t efficientscn:cpu .
# Models: the shipped demonstration models, or --build-arg MODELS=saved_models (the export commands' folder; the
# build context holds these two, see .dockerignore), or any models folder mounted over /workspace/saved_models.
ARG BASE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE}

# No pip cache, no bytecode written at run time; everything the programs write at run time goes under /tmp,
# writable for any user (--user) and as a tmpfs under --read-only: the home folder (Keras, Matplotlib), temporary
# files and the cache of imported models and frozen graphs (mount a volume on it to keep it between runs).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp TMPDIR=/tmp MPLCONFIGDIR=/tmp/matplotlib EFFICIENTSCN_CACHE=/tmp/efficientscn-cache

# The dependencies first, in a layer of their own that a change of the code does not rebuild: installed with an
# empty package of the same name, which is removed again. TensorFlow comes from PyPI where the base lacks it; the
# base's own (the GPU image's, with its CUDA libraries) satisfies the pin and is kept. TensorFlow's C++ headers
# serve only to compile custom operations.
COPY pyproject.toml /tmp/dependencies/
RUN cd /tmp/dependencies && mkdir efficientscn && touch efficientscn/__init__.py README.md LICENSE \
    && python3 -m pip install . && python3 -m pip uninstall --yes efficientscn \
    && tensorflow="$(python3 -c 'import importlib.util as u; print(*u.find_spec("tensorflow").submodule_search_locations)')" \
    && rm -rf /tmp/dependencies "$tensorflow/include"

WORKDIR /opt/efficientscn
COPY pyproject.toml README.md LICENSE ./
COPY efficientscn ./efficientscn
RUN python3 -m pip install --no-deps . && rm -rf build efficientscn.egg-info

WORKDIR /workspace
ARG MODELS=submitted_saved_models
COPY ${MODELS} /workspace/saved_models
COPY predict.sh /workspace/predict.sh
CMD ["sh", "predict.sh"]
