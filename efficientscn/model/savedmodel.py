"""The SavedModel interface of our networks: the original's signature, our export metadata, atomic saving.

The exported models take `image` float16 [N, 1, D, H, W] (channels-first, any spatial size the network accepts);
the localization model returns `output_0` bool [N, 1, D, H, W] (foreground logit > background logit), the SCN
float16 [N, 5, D, H, W] normalised probabilities. Inside, the image is transposed to channels-last and computed
in float32 with the run's averaged (EMA) weights, which runs on a CPU without XLA as well as on a GPU (the
original computes in float16, docs/fidelity.md #31).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.model.contract import InputContract
from efficientscn.nn.localization import localization_logits_by_slabs
from efficientscn.nn.scn import scn_probabilities_by_slabs
from efficientscn.nn.slabs import slices_first

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"

METADATA_FILE = Path("assets.extra") / "efficientscn.json"
"""Inside an exported SavedModel: which stage, network configuration and input contract it holds, from which run
and iteration.

TensorFlow ignores `assets.extra`; inference reads it to rebuild the network in the precision of the device
(bfloat16 on a CPU, for example) and to give it its input. A SavedModel without it (the original's) is run through
its signature, with the paper's input contract.
"""


DEMONSTRATION = "demonstration"
"""The export metadata field that marks a demonstration model: what it was trained on and what it is not for. Inference
warns when it uses such a model, and the report and the preview say so."""


def read_metadata(folder: Path) -> dict[str, Any] | None:
    """The export metadata of one of our SavedModels, or None for a SavedModel exported elsewhere."""
    path = folder / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable export metadata ({error})") from error


def update_metadata(folder: Path, fields: dict[str, Any]) -> None:
    """Add or replace `fields` in the export metadata of one of our SavedModels (not yet published: no atomicity)."""
    path = folder / METADATA_FILE
    metadata = read_metadata(folder)
    if metadata is None:
        raise InputError(f"{folder}: no export metadata to update")
    path.write_text(json.dumps({**metadata, **fields}, indent=1) + "\n", encoding="utf-8")


UNSUITABLE_PRECISIONS = "unsuitable_precisions"
"""Export metadata key: precisions the network must not run in (it then runs in float32), with the reason under
`unsuitable_precisions_reason`; import-original sets it for the original's localization network, whose mask moves
in bfloat16."""


MODEL_VARIABLES = "model_variables"
"""The attribute of an export module listing the network's variables, in `model.variables` order."""

IMAGE_SIGNATURE = tf.TensorSpec([None, 1, None, None, None], tf.float16, name="image")
"""The original's input: the CT /2048 clamped, float16, channels-first [N, 1, D, H, W]."""


class ExportModule(tf.Module):
    """A network behind the original's SavedModel interface: channels-first float16 in, computed in float32."""

    def __init__(self, model: keras.Model, name: str) -> None:
        super().__init__(name=name)
        self.model = model
        # Keras 3 variables are not tf.Module children: track the TensorFlow variables so the SavedModel holds them
        setattr(self, MODEL_VARIABLES, [variable.value for variable in model.variables])

    def run_network(self, image: tf.Tensor) -> Any:
        """The network on a channels-first float16 image, transposed to channels-last float32."""
        return self.model(channels_last(image), training=False)


def channels_last(image: tf.Tensor) -> tf.Tensor:
    """A channels-first float16 image [N, 1, D, H, W] as the networks take it: channels-last float32."""
    return tf.transpose(tf.cast(image, tf.float32), [0, 2, 3, 4, 1])


class LocalizationModule(ExportModule):
    """The localization network: `image` -> `output_0` bool [N, 1, D, H, W], foreground logit > background logit.

    With `slab_budget_bytes` (inference only; an export runs the whole network) the network runs by z-slabs of a
    depth fitting that budget, with the same mask up to the compute dtype's rounding (`efficientscn.nn.slabs`).
    """

    def __init__(self, model: keras.Model, slab_budget_bytes: int | None = None) -> None:
        super().__init__(model, name="localization")
        self.slab_budget_bytes = slab_budget_bytes

    @tf.function(input_signature=[IMAGE_SIGNATURE])
    def __call__(self, image: tf.Tensor) -> tf.Tensor:
        if self.slab_budget_bytes is None:
            logits = self.run_network(image)
            return (logits[..., 1] > logits[..., 0])[:, tf.newaxis]

        def foreground(logits: tf.Tensor) -> tf.Tensor:
            return slices_first(logits[..., 1] > logits[..., 0])  # (d, N, H, W)

        slabs = localization_logits_by_slabs(
            self.model, channels_last(image), self.slab_budget_bytes, foreground, tf.bool
        )
        return tf.transpose(slabs.concat(), [1, 0, 2, 3])[:, tf.newaxis]


class SegmentationModule(ExportModule):
    """The SCN: `image` -> `output_0` float16 [N, 5, D, H, W], the normalised combined probabilities.

    Kept as the original (docs/fidelity.md #9): probabilities, not labels, leave the model, so that inference can
    upsample them to the CT's resolution before the argmax, as the original does. `slab_budget_bytes` as for
    `LocalizationModule`: the same probabilities up to the compute dtype's rounding, by z-slabs.
    """

    def __init__(self, model: keras.Model, slab_budget_bytes: int | None = None) -> None:
        super().__init__(model, name="segmentation")
        self.slab_budget_bytes = slab_budget_bytes

    @tf.function(input_signature=[IMAGE_SIGNATURE])
    def __call__(self, image: tf.Tensor) -> tf.Tensor:
        if self.slab_budget_bytes is None:
            probabilities = self.run_network(image)["probabilities"]
            return tf.cast(tf.transpose(probabilities, [0, 4, 1, 2, 3]), tf.float16)

        def channels_first(probabilities: tf.Tensor) -> tf.Tensor:
            return tf.cast(tf.transpose(probabilities, [1, 0, 4, 2, 3]), tf.float16)  # (d, N, C, H, W)

        slabs = scn_probabilities_by_slabs(
            self.model, channels_last(image), self.slab_budget_bytes, channels_first, tf.float16
        )
        return tf.transpose(slabs.concat(), [1, 2, 0, 3, 4])


def refuse_existing(output: str | Path, *, overwrite: bool) -> Path:
    """`output` as a Path; FileExistsError if it exists and `overwrite` is not set."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: already exists (use --overwrite to replace it)")
    return output


def save_module(
    module: tf.Module,
    output: str | Path,
    *,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
    signatures: dict[str, Any] | None = None,
) -> Path:
    """Save `module` atomically: a finished folder or none.

    `signatures` default to the module's `__call__` as the serving signature ({} for none: functions as
    attributes only); `metadata`, if given, is written to METADATA_FILE inside the SavedModel.
    """
    output = refuse_existing(output, overwrite=overwrite)
    with staging_folder(output) as staging:
        tf.saved_model.save(
            module, str(staging), signatures={SIGNATURE: module.__call__} if signatures is None else signatures
        )
        if metadata is not None:
            (staging / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
        publish_folder(staging, output)
    logger.info("wrote %s", output)
    return output


@contextlib.contextmanager
def staging_folder(output: Path) -> Iterator[Path]:
    """A new hidden folder beside `output` to build it in; removed on leaving unless published meanwhile."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_folder(staging: Path, output: Path) -> None:
    """Move a finished folder to `output` (same file system), replacing what is there: the old one is moved aside,
    not deleted, until the new one is in place, and put back if the move fails."""
    replaced = output.with_name(f".{output.name}.replaced")
    if output.exists():
        shutil.rmtree(replaced, ignore_errors=True)
        output.rename(replaced)
    try:
        staging.rename(output)
    except OSError:
        if replaced.exists() and not output.exists():
            replaced.rename(output)  # the old one back where it was
        raise
    shutil.rmtree(replaced, ignore_errors=True)


def read_contract(folder: Path, metadata: dict[str, Any] | None) -> InputContract | None:
    """The input contract an export recorded, or None for a SavedModel that records none (earlier exports)."""
    if metadata is None or "contract" not in metadata:
        return None
    try:
        return InputContract.from_record(metadata["contract"])
    except (ValueError, TypeError) as error:
        raise InputError(f"{folder / METADATA_FILE}: unusable input contract ({error})") from error
