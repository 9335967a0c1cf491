"""The two networks of inference, loaded from SavedModels and run at the precision chosen for the device.

A models folder holds `localization/` and `segmentation/` (SavedModels with the original's interface: `image`
float16 [N, 1, D, H, W] in; a bool mask, or float16 probabilities [N, 5, D, H, W], out) and optionally
`tf_utils_module/`. Our own exports carry their network configuration and input contract
(`model.savedmodel.METADATA_FILE`): the network is rebuilt from it through its stage's spec in the chosen precision
(bfloat16 on a CPU that has it, float16 on a GPU) and given the SavedModel's weights. Any other SavedModel with that
interface runs through its serving signature (on a CPU under XLA, since float16 channels-first convolutions have no
CPU kernels) with the paper's input contract; the original's released models are imported instead (`original`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import keras
import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.infer.cache import fingerprint
from efficientscn.infer.graphs import cached_graph, freeze
from efficientscn.infer.runtime import SLAB_BUDGET_BYTES
from efficientscn.model.contract import InputContract
from efficientscn.model.precision import precision_policy
from efficientscn.model.savedmodel import (
    DEMONSTRATION,
    MODEL_VARIABLES,
    SIGNATURE,
    UNSUITABLE_PRECISIONS,
    read_contract,
    read_metadata,
)
from efficientscn.model.specs import SPECS, StageName
from efficientscn.nn.weights import assign_weights_by_order, numbered_variable_keys, read_checkpoint_arrays

logger = logging.getLogger(__name__)

Device = Literal["cpu", "gpu"]


def select_device(requested: str | None) -> Device:
    """The device inference runs on: `requested` ("cpu" or "gpu"), or a GPU when TensorFlow sees one.

    Must run before TensorFlow places any tensor: choosing the CPU hides the GPUs; on a GPU, memory grows as
    needed instead of being taken whole (as the original), so the process holds only what it uses.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "gpu" and not gpus:
        raise InputError("--device gpu: TensorFlow sees no GPU (is the CUDA extra installed? see the README)")
    if not gpus:
        return "cpu"
    try:
        if requested == "cpu":
            tf.config.set_visible_devices([], "GPU")
        else:
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # TensorFlow already started in this process: the first choice stands
        logger.debug("devices already initialised; keeping their settings")
    if requested == "cpu" or not tf.config.get_visible_devices("GPU"):
        return "cpu"
    return "gpu"


@dataclass(frozen=True)
class Network:
    """A loaded network: `run(image)` takes the /2048-clamped CT float16 [1, 1, D, H, W], channels-first."""

    stage: StageName
    path: Path
    source: Literal["rebuilt", "signature"]
    """"rebuilt": our export, rebuilt in `precision`; "signature": another SavedModel run as saved."""
    precision: str
    run: Callable[[tf.Tensor], tf.Tensor]
    contract: InputContract
    """The input the network was trained for: recorded in our exports, the paper's for any other SavedModel."""
    imported: dict[str, Any] = field(default_factory=dict)
    """For a network imported from the original's SavedModel: where from, and how it was verified against it."""
    demonstration: str | None = None
    """For a demonstration model (its export says so): what it was trained on and what it is not for."""
    slab_budget_bytes: int | None = None
    """A rebuilt network runs its full-resolution levels by z-slabs fitting this budget; None: whole."""

    def describe(self) -> dict[str, Any]:
        """What the report says about this network."""
        return {
            "path": str(self.path),
            "source": self.source,
            "precision": self.precision,
            "slab_budget_mb": None if self.slab_budget_bytes is None else self.slab_budget_bytes / 2**20,
            "contract": self.contract.to_record(),
            **({"imported": self.imported} if self.imported else {}),
            **({DEMONSTRATION: self.demonstration} if self.demonstration else {}),
        }


def _rebuilt(
    stage: StageName,
    folder: Path,
    metadata: dict[str, Any],
    precision: str,
    device: Device,
    slab_budget_bytes: int | None,
) -> Callable:
    """Our network from its recorded configuration in `precision`, with the SavedModel's weights (by order), as a
    frozen graph, run by slabs fitting `slab_budget_bytes` (None: whole): from the cache when this export was traced
    so before (`graphs.cached_graph`)."""
    if metadata.get("stage") != stage:
        raise InputError(f"{folder}: holds the {metadata.get('stage')!r} network, expected {stage!r}")

    def trace() -> tf.compat.v1.MetaGraphDef:
        model = rebuilt_model(stage, folder, metadata, precision)
        module = SPECS[stage].module(model, slab_budget_bytes)  # alive while frozen: its tf.function holds it weakly
        return freeze(module.__call__.get_concrete_function(), device)

    slabs = "whole" if slab_budget_bytes is None else f"slabs{slab_budget_bytes}"
    return cached_graph(stage, f"{fingerprint(folder)}-{precision}-{device}-{slabs}", trace)


def rebuilt_model(stage: StageName, folder: Path, metadata: dict[str, Any], precision: str) -> keras.Model:
    """The Keras network of one of our exports, built from its recorded configuration in `precision`, with its
    weights read by order from the SavedModel's checkpoint (its graphs need not be loaded)."""
    spec = SPECS[stage]
    with precision_policy(precision):
        model = spec.build(spec.network_config(metadata["network"]))
    checkpoint = folder / "variables" / "variables"
    keys = numbered_variable_keys(checkpoint, MODEL_VARIABLES, numbered="")
    assign_weights_by_order(model.variables, read_checkpoint_arrays(checkpoint, keys), keys)
    return model


def run_precision(folder: Path, metadata: dict[str, Any], precision: str) -> str:
    """`precision`, or float32 when the export marks it unsuitable for this network (said in the log)."""
    if precision not in metadata.get(UNSUITABLE_PRECISIONS, []):
        return precision
    reason = metadata.get(f"{UNSUITABLE_PRECISIONS}_reason")
    logger.info(
        "%s: runs in float32, not %s, as its export asks%s", folder, precision, f" ({reason})" if reason else ""
    )
    return "float32"


def _through_signature(folder: Path, device: Device) -> Callable:
    """A SavedModel called through its serving signature (XLA-compiled on a CPU for its float16 kernels)."""
    saved = tf.saved_model.load(str(folder))
    if SIGNATURE not in saved.signatures:
        raise InputError(f"{folder}: SavedModel has no {SIGNATURE!r} signature")
    signature = saved.signatures[SIGNATURE]
    inputs = signature.structured_input_signature[1]
    if set(inputs) != {"image"}:
        raise InputError(f"{folder}: the serving signature takes {sorted(inputs)}, expected one input 'image'")
    if "output_0" not in signature.structured_outputs:
        raise InputError(f"{folder}: the serving signature gives {sorted(signature.structured_outputs)}, not output_0")

    def call(image: tf.Tensor) -> tf.Tensor:
        return signature(image=image)["output_0"]

    call.saved_model = saved  # type: ignore[attr-defined]  # keeps the variables alive as long as the function
    return tf.function(call, jit_compile=device == "cpu")


def _contract(stage: StageName, folder: Path, metadata: dict[str, Any] | None) -> InputContract:
    """The SavedModel's recorded input contract, or the paper's (said in the log) when it records none."""
    contract = read_contract(folder, metadata)
    if contract is None:
        contract = SPECS[stage].default_contract
        logger.info("%s: no input contract recorded; using the paper's: %s", folder, contract.describe())
    else:
        logger.info("%s: input contract %s", folder, contract.describe())
    return contract


def load_network(
    folder: Path,
    stage: StageName,
    device: Device,
    precision: str,
    slab_budget_bytes: int | None = SLAB_BUDGET_BYTES,
) -> Network:
    """Load a stage's network from a SavedModel folder, ready to run on `device` in `precision` where rebuilt, and
    there by slabs fitting `slab_budget_bytes` (None: whole; a SavedModel run as saved always runs whole)."""
    metadata = read_metadata(folder)
    try:
        contract = _contract(stage, folder, metadata)
        if metadata is None:
            logger.info("%s: no export metadata; running its serving signature as saved", folder)
            return Network(stage, folder, "signature", "as saved", _through_signature(folder, device), contract)
        precision = run_precision(folder, metadata, precision)
        logger.info("%s: loading the %s network in %s", folder, stage, precision)
        run = _rebuilt(stage, folder, metadata, precision, device, slab_budget_bytes)
        imported, demonstration = metadata.get("imported", {}), metadata.get(DEMONSTRATION)
        return Network(stage, folder, "rebuilt", precision, run, contract, imported, demonstration, slab_budget_bytes)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, OSError, tf.errors.OpError) as error:  # a broken or foreign model
        raise InputError(f"{folder}: cannot load the {stage} network: {type(error).__name__}: {error}") from error
