"""One spec per stage: what the stage's network is, how it is built and wrapped for export, the input it expects.

Training exports through these specs and inference rebuilds through them, so neither needs the other. A stage is
named as its models subfolder and its run folders: "localization", and "segmentation" for the SCN's stage.
TensorFlow is imported only when a network is built or wrapped, so the command line reads the specs without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from efficientscn.model.contract import PAPER_LOCALIZATION, PAPER_SEGMENTATION, InputContract
from efficientscn.nn.config import LocalizationNetConfig, SCNConfig
from efficientscn.settings import from_record, to_record
from efficientscn.versions import versions

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

StageName = Literal["localization", "segmentation"]

SCN_EXPORT_EPSILON = 1e-5
"""The normalisation epsilon of the original's exported SCN (1e-8 in training)."""


@dataclass(frozen=True)
class ModelSpec:
    """A stage's network as a model: its configuration type, builder, SavedModel wrapper and default contract."""

    name: StageName
    """The models subfolder (`<models>/<name>/`) and the run folders' name (`<output>/<name>/cv<k>/...`)."""
    description: str
    """What the network is, for help texts."""
    interface: str
    """What its SavedModel's serving signature returns, for help texts."""
    network_config_type: type
    build: Callable[[Any], keras.Model]
    """Network configuration -> the network as exported, in the Keras dtype policy in force."""
    module: Callable[..., tf.Module]
    """The exported network -> the tf.Module saved with its `__call__` as the serving signature; inference passes
    `slab_budget_bytes` to run it by z-slabs (`efficientscn.nn.slabs`), None for the whole network."""
    default_contract: InputContract
    """The paper's input: what a SavedModel that records no contract (the original's, earlier exports) is given."""
    original_variable_keys: Callable[[Path], list[str]]
    """The original's SavedModel checkpoint (`<folder>/variables/variables`) -> its variable keys in the order of
    our network's weights; ValueError if the checkpoint does not have the original's layout."""
    original_parameters: int
    """The parameter count of the original's released network (the paper's configuration)."""

    def network_config(self, record: Mapping[str, Any]) -> Any:
        """The network configuration from its record in a config.json or export metadata."""
        return from_record(self.network_config_type, record)

    def save(
        self,
        model: keras.Model,
        network: Any,
        output: str | Path,
        *,
        contract: InputContract | None = None,
        overwrite: bool = False,
        source: dict[str, Any] | None = None,
    ) -> Path:
        """Save this stage's network (built from the configuration `network`) as its SavedModel, with the metadata
        inference rebuilds it from and the input contract it was trained for (None: the default, the paper's);
        `source` holds further metadata fields: where the weights came from (a run and iteration, for example), or
        precisions the network must not run in."""
        from efficientscn.model.savedmodel import save_module

        metadata = {
            "stage": self.name,
            "network": to_record(network),
            "contract": (contract or self.default_contract).to_record(),
            **(source or {}),
            "versions": versions(),
        }
        return save_module(self.module(model), output, overwrite=overwrite, metadata=metadata)


def _build_localization(network: LocalizationNetConfig) -> keras.Model:
    from efficientscn.nn.localization import build_localization_net

    return build_localization_net(network)


def _build_exported_scn(network: SCNConfig) -> keras.Model:
    """The SCN as exported: the original's export normalises with epsilon 1e-5 instead of training's 1e-8."""
    from efficientscn.nn.scn import build_scn

    return build_scn(replace(network, normalisation_epsilon=SCN_EXPORT_EPSILON))


def _original_localization_keys(checkpoint: Path) -> list[str]:
    from efficientscn.nn.localization import ORIGINAL_SCOPE
    from efficientscn.nn.weights import numbered_variable_keys

    return numbered_variable_keys(checkpoint, ORIGINAL_SCOPE)


def _original_scn_keys(checkpoint: Path) -> list[str]:
    from efficientscn.nn.scn import original_scn_variable_keys

    return original_scn_variable_keys(checkpoint)


def _localization_module(model: keras.Model, slab_budget_bytes: int | None = None) -> tf.Module:
    from efficientscn.model.savedmodel import LocalizationModule

    return LocalizationModule(model, slab_budget_bytes)


def _segmentation_module(model: keras.Model, slab_budget_bytes: int | None = None) -> tf.Module:
    from efficientscn.model.savedmodel import SegmentationModule

    return SegmentationModule(model, slab_budget_bytes)


LOCALIZATION_SPEC = ModelSpec(
    name="localization",
    description="the stage-1 localization U-Net (the whole CT, 6 mm in the paper; any-organ mask)",
    interface="output_0 bool [N,1,D,H,W] (organ foreground)",
    network_config_type=LocalizationNetConfig,
    build=_build_localization,
    module=_localization_module,
    default_contract=PAPER_LOCALIZATION,
    original_variable_keys=_original_localization_keys,
    original_parameters=637_474,
)
SEGMENTATION_SPEC = ModelSpec(
    name="segmentation",
    description="the stage-2 SpatialConfiguration-Net (the organ box, 2 mm in the paper; 5 labels)",
    interface="output_0 float16 [N,5,D,H,W] (normalised probabilities of labels 0-4)",
    network_config_type=SCNConfig,
    build=_build_exported_scn,
    module=_segmentation_module,
    default_contract=PAPER_SEGMENTATION,
    original_variable_keys=_original_scn_keys,
    original_parameters=1_270_090,
)
SPECS: dict[StageName, ModelSpec] = {spec.name: spec for spec in (LOCALIZATION_SPEC, SEGMENTATION_SPEC)}
STAGE_NAMES: tuple[StageName, ...] = tuple(SPECS)
"""The two stages, in the order inference runs them, and the subfolders of a models folder. Inference is a
two-stage cascade written for exactly these: the localization finds the organ box, the segmentation segments
inside it (`infer.pipeline.Pipeline`, the original's import). Training takes any stage of `SPECS`; a third stage
at inference needs a new cascade, not only an entry here."""
