"""The pre/post-processing functions of `ops` for inference: as frozen graphs, or as the original's module.

`UtilsModule` holds every function of `efficientscn.infer.ops` as a tf.function attribute of the same name, with
concrete traces for the signatures the original's module was saved with, so that a saved copy can stand in for
the original's folder and the other way round. `PipelineFunctions` holds the steps inference runs, as frozen
graphs from the cache. `load_utils` gives the pipeline `PipelineFunctions`, or a saved module (ours or the
original's).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.imaging.resample import AIR_HU
from efficientscn.infer import ops
from efficientscn.infer.graphs import cached_graph, freeze
from efficientscn.model.savedmodel import read_metadata, save_module
from efficientscn.versions import versions

logger = logging.getLogger(__name__)

UTILS_STAGE = "tf_utils_module"
"""The `stage` of our traced module's export metadata."""

IMAGE = tf.TensorSpec([None, 1, None, None, None], tf.float16, name="image")
ANY_IMAGE = tf.TensorSpec([None, None, None, None, None], tf.float16, name="image")
LABELS = tf.TensorSpec([None, 1, None, None, None], tf.uint8, name="image")
MASK = tf.TensorSpec([None, 1, None, None, None], tf.bool, name="image")
PROBABILITIES = tf.TensorSpec([None, 5, None, None, None], tf.float16, name="segmentation_output")
SIZE = tf.TensorSpec([3], tf.int32)
VECTOR = tf.TensorSpec([3], tf.float32)
AMOUNTS = tf.TensorSpec([3, 2], tf.int32)
VALID_SIZES = tf.TensorSpec([None], tf.int32)
SIGMA = tf.TensorSpec(None, tf.float32, name="sigma")
INDEX = tf.TensorSpec([], tf.int32)


PIPELINE_SIGNATURES = {
    "preprocess_for_localization": (IMAGE, VECTOR, VECTOR, SIGMA, VALID_SIZES, VALID_SIZES, VALID_SIZES),
    "bbox_from_localization_output": (MASK, VECTOR, AMOUNTS),
    "preprocess_for_segmentation": (
        IMAGE,
        VECTOR,
        VECTOR,
        VECTOR,
        VECTOR,
        SIGMA,
        VALID_SIZES,
        VALID_SIZES,
        VALID_SIZES,
    ),
    "postprocess_for_segmentation": (PROBABILITIES, AMOUNTS, AMOUNTS, SIZE),
}
"""The functions the pipeline calls, with the signatures of the original's module."""


class Utils(Protocol):
    """The functions of the original's `tf_utils_module` the pipeline calls (see `ops` for shapes and dtypes)."""

    def preprocess_for_localization(self, image: Any, spacing: Any, new_spacing: Any, sigma: Any, *valid: Any) -> Any:
        """(input, paddings) of the localization network."""

    def bbox_from_localization_output(self, mask: Any, spacing: Any, paddings: Any) -> Any:
        """(end, start) of the organ box in mm, in that order as the original."""

    def preprocess_for_segmentation(
        self, image: Any, spacing: Any, new_spacing: Any, end: Any, start: Any, sigma: Any, *valid: Any
    ) -> Any:
        """(input, cropped_size, croppings, paddings) of the segmentation network."""

    def postprocess_for_segmentation(self, probabilities: Any, paddings: Any, croppings: Any, size: Any) -> Any:
        """The uint8 label [1, 1, D, H, W] on the CT's grid."""


def _traced(function: Any, *signature: Any) -> Any:
    """`function` as a tf.function with a fixed signature (tensors only)."""
    return tf.function(function, input_signature=list(signature))


class UtilsModule(tf.Module):
    """Every function of `ops`, traced with the original's signatures; called the same way as the original's.

    Functions with Python constants among their arguments (pad value, interpolator, data format) are traced for
    the constants the original was traced with; other constants trace anew when called directly.
    """

    def __init__(self) -> None:
        super().__init__(name="tf_utils_module")
        self.gaussian_kernel1d = _traced(
            ops.gaussian_kernel1d, tf.TensorSpec(None, tf.float16), tf.TensorSpec(None, tf.int32)
        )
        self.gaussian = _traced(ops.gaussian, IMAGE, SIGMA)
        self.smooth_image = _traced(ops.smooth_image, IMAGE, VECTOR, SIGMA)
        self.size_for_spacing = _traced(ops.size_for_spacing, SIZE, VECTOR, VECTOR)
        self.get_valid_size = _traced(ops.get_valid_size, SIZE, VALID_SIZES, VALID_SIZES, VALID_SIZES)
        self.intensity_postprocessing_ct = tf.function(ops.intensity_postprocessing_ct)
        self.intensity_postprocessing_ct.get_concrete_function(ANY_IMAGE)
        self.bounding_box = _traced(ops.bounding_box, tf.TensorSpec([None, None, None], tf.bool, name="image"))
        self.valid_bbox_extent_for_segmentation = _traced(
            ops.valid_bbox_extent_for_segmentation, VECTOR, VECTOR, VECTOR, VALID_SIZES, VALID_SIZES, VALID_SIZES
        )
        first = ops.CHANNELS_FIRST
        self.resize_image = tf.function(ops.resize_image)
        for image, interpolator in ((IMAGE, "area"), (ANY_IMAGE, "area"), (PROBABILITIES, "linear")):
            self.resize_image.get_concrete_function(image, SIZE, interpolator, first)
        self.center_pad_to_size = tf.function(ops.center_pad_to_size)
        self.center_pad_to_size.get_concrete_function(ANY_IMAGE, SIZE, AIR_HU, first)
        self.pad_image = tf.function(ops.pad_image)
        for image, value in ((ANY_IMAGE, AIR_HU), (IMAGE, 0), (LABELS, 0)):
            self.pad_image.get_concrete_function(image, AMOUNTS, value, first)
        self.crop_image = tf.function(ops.crop_image)
        for image in (IMAGE, LABELS):
            self.crop_image.get_concrete_function(image, AMOUNTS, first)
        self.crop_and_pad_with_bbox = tf.function(ops.crop_and_pad_with_bbox)
        self.crop_and_pad_with_bbox.get_concrete_function(IMAGE, VECTOR, VECTOR, VECTOR, first)
        for name, signature in PIPELINE_SIGNATURES.items():
            setattr(self, name, _traced(getattr(ops, name), *signature))


PLANES_SIZE = tf.TensorSpec([2], tf.int32)

LEAN_SIGNATURES = {
    "resize_planes": (IMAGE, PLANES_SIZE),
    "localization_input_from_planes": (IMAGE, SIZE, VALID_SIZES, VALID_SIZES, VALID_SIZES),
    "bbox_from_localization_output": PIPELINE_SIGNATURES["bbox_from_localization_output"],
    "segmentation_box_voxels": (SIZE, VECTOR, VECTOR, VECTOR, VECTOR, SIGMA, VALID_SIZES, VALID_SIZES, VALID_SIZES),
    "segmentation_planes": (
        IMAGE, SIZE, INDEX, INDEX, SIZE, VECTOR, VECTOR, VECTOR, VECTOR, SIGMA, VALID_SIZES, VALID_SIZES, VALID_SIZES
    ),
    "segmentation_input_from_planes": (
        IMAGE, SIZE, VECTOR, VECTOR, VECTOR, VECTOR, SIGMA, VALID_SIZES, VALID_SIZES, VALID_SIZES
    ),
    "box_label_slab": (PROBABILITIES, AMOUNTS, SIZE, INDEX),
}  # fmt: skip
"""The steps of `ops` the pipeline runs with `PipelineFunctions`: the original's functions cut so that the CT is
converted to float16 (and smoothed) a slab of its box region at a time, and its label is filled in slab by slab
where the box lies."""


class PipelineFunctions:
    """The functions of `ops` as frozen graphs from the cache (`graphs.cached_graph`), loaded without tracing:
    what inference uses unless given a saved module. The `LEAN_SIGNATURES` steps are loaded at once (`step`);
    `preprocess_for_localization`, which a smoothing localization contract needs, when first called."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._functions = {name: _frozen(name, signature, device) for name, signature in LEAN_SIGNATURES.items()}

    def step(self, name: str) -> Any:
        """The function `name` of `ops`, with its `LEAN_SIGNATURES` or `PIPELINE_SIGNATURES` entry."""
        if name not in self._functions:
            self._functions[name] = _frozen(name, PIPELINE_SIGNATURES[name], self.device)
        return self._functions[name]

    def preprocess_for_localization(self, *arguments: Any) -> Any:
        return self.step("preprocess_for_localization")(*arguments)

    def bbox_from_localization_output(self, *arguments: Any) -> Any:
        return self.step("bbox_from_localization_output")(*arguments)


def _frozen(name: str, signature: tuple[tf.TensorSpec, ...], device: str) -> Any:
    """The function `name` of `ops` traced with `signature`, as a cached frozen graph."""
    function = _traced(getattr(ops, name), *signature)
    return cached_graph(name, device, lambda: freeze(function.get_concrete_function(), device))


def save_utils_module(output: Path, *, overwrite: bool = False) -> Path:
    """Trace a `UtilsModule` and save it at `output`, atomically: a finished folder or none.

    FileExistsError if `output` exists and `overwrite` is not set. There is no serving signature: as in the
    original, the functions are attributes of the loaded object.
    """
    metadata = {"stage": UTILS_STAGE, "versions": versions()}
    return save_module(UtilsModule(), output, overwrite=overwrite, signatures={}, metadata=metadata)


def load_utils(path: Path | None = None, device: str = "cpu") -> Utils | PipelineFunctions:
    """The utils functions: `PipelineFunctions` for None, else the SavedModel at `path` (ours or the original's).

    The original's module smooths with float16 channels-first convolutions, which have no CPU kernel (and it
    resizes with an op XLA cannot compile): it is refused on a CPU, with the reason (docs/fidelity.md #38).
    """
    if path is None:
        return PipelineFunctions(device)
    if not (Path(path) / "saved_model.pb").is_file():
        raise InputError(f"{path}: no SavedModel here (expected a traced tf_utils_module)")
    if device == "cpu" and (read_metadata(Path(path)) or {}).get("stage") != UTILS_STAGE:
        raise InputError(
            f"{path}: a tf_utils_module not traced by this package (the original's?) needs a GPU: its float16 "
            "channels-first smoothing has no CPU kernel; leave out --utils to use the package's functions"
        )
    return tf.saved_model.load(str(path))
