"""The original's released FLARE21 networks made our own: imported by weight order, verified against their graphs.

The original's SavedModels (its repository's `submitted_saved_models/localization` and `segmentation`) hold float16
channels-first graphs and no metadata to rebuild a network from; on a CPU they run only under XLA, compiled once
per input size. Import reads their weights by order into our networks (the order the parity tests establish:
637,474 and 1,270,090 parameters) and writes them as our exports, with the paper's input contract, so that
inference rebuilds them in the device's precision. Before anything is written, each imported network, in the
precision inference will run it in here, is run beside the original's own serving signature on the inputs a probe
CT gives: localization masks must reach Dice >= 0.999 (a probe on which the original finds no organ leaves this
check inconclusive, and says so), segmentation probabilities must differ by at most 0.05 with argmax agreement
>= 99.9 %. The figures are recorded in the export's metadata and reach the run report (docs/fidelity.md #46).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from efficientscn.convert.verification import compare_masks, compare_probabilities
from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.infer.cache import cache_root, fingerprint, remove_stale
from efficientscn.infer.importers import ImportContext
from efficientscn.infer.models import Device, Network, load_network
from efficientscn.infer.pipeline import InferenceConfig, Pipeline, check_processable
from efficientscn.infer.utils_module import PipelineFunctions, Utils, load_utils
from efficientscn.model.folder import ModelsFolder
from efficientscn.model.precision import precision_policy
from efficientscn.model.savedmodel import (
    UNSUITABLE_PRECISIONS,
    publish_folder,
    read_metadata,
    refuse_existing,
    staging_folder,
    update_metadata,
)
from efficientscn.model.specs import SPECS, STAGE_NAMES, StageName
from efficientscn.nn.weights import assign_weights_by_order, checkpoint_shapes, read_checkpoint_arrays
from efficientscn.phantom import make_phantom

logger = logging.getLogger(__name__)

LOCALIZATION_UNSUITABLE_PRECISIONS = ["bfloat16"]
LOCALIZATION_UNSUITABLE_REASON = (
    "its mask moves in bfloat16 against the original's float16 (Dice 0.94 on a 20-slice CT slab), not in float32"
)


class VerificationError(InputError):
    """An imported network does not compute what the original's graph computes; nothing was written."""


def is_original_savedmodel(folder: Path, stage: StageName) -> bool:
    """Whether `folder` holds a SavedModel in the original's format for `stage`: no export metadata of ours, and
    a checkpoint with the original's variable layout and parameter count (its `.index` file is enough)."""
    if not (folder / "saved_model.pb").is_file() or read_metadata(folder) is not None:
        return False
    spec, checkpoint = SPECS[stage], folder / "variables" / "variables"
    try:
        shapes = checkpoint_shapes(checkpoint, spec.original_variable_keys(checkpoint))
    except (ValueError, tf.errors.OpError):
        return False
    return sum(int(np.prod(shape)) for shape in shapes) == spec.original_parameters


def _convert(stage: StageName, source: Path, output: Path) -> None:
    """The original's `stage` network in `source` written as our export at `output` (float32, paper contract)."""
    spec = SPECS[stage]
    checkpoint = source / "variables" / "variables"
    keys = spec.original_variable_keys(checkpoint)
    network = spec.network_config_type()  # the paper's network: what the original released
    with precision_policy("float32"):
        model = spec.build(network)
    try:
        assign_weights_by_order(model.weights, read_checkpoint_arrays(checkpoint, keys), keys)
    except (ValueError, tf.errors.OpError) as error:
        raise InputError(f"{source}: cannot import the original's {stage} network: {error}") from error
    fields: dict[str, Any] = {}
    if stage == "localization":
        fields[UNSUITABLE_PRECISIONS] = LOCALIZATION_UNSUITABLE_PRECISIONS
        fields[f"{UNSUITABLE_PRECISIONS}_reason"] = LOCALIZATION_UNSUITABLE_REASON
    spec.save(model, network, output, source=fields)  # `imported` is added once verified
    logger.info("%s: %d weights of the original's %s network imported by order", source, len(keys), stage)


@dataclasses.dataclass(frozen=True)
class Probe:
    """The CT the imported networks are checked on, and what it is called in messages and records."""

    name: str
    ct: CanonicalCT


def probe_from(path: Path | None, config: InferenceConfig | None = None) -> Probe:
    """The CT at `path` as a probe, or (None) the package's phantom: an adult abdomen of ellipsoid organs.
    InputError if the pipeline cannot process it (`check_processable`)."""
    config = config or InferenceConfig()
    if path is None:
        probe = Probe("the package's phantom", CanonicalCT.from_image(make_phantom()[0], "phantom"))
    else:
        ct = CanonicalCT.read(path, max_voxels=config.max_voxels, spacing_fallback=config.spacing_fallback)
        probe = Probe(str(path), ct)
    check_processable(probe.ct.array_zyx.shape, probe.ct.spacing_zyx, config)
    return probe


def probe_or_phantom(path: Path | None, config: InferenceConfig) -> Probe:
    """The CT at `path` as a probe or, if there is none or it cannot be read or processed, the phantom (said in the
    log)."""
    if path is None:
        return probe_from(None, config)
    try:
        return probe_from(path, config)
    except (InputError, OSError) as error:
        logger.warning("%s cannot serve as the probe of the import (%s); using the package's phantom", path, error)
        return probe_from(None, config)


def _recording(network: Network) -> tuple[Network, list[tuple[tf.Tensor, tf.Tensor]]]:
    """`network` that also keeps each (input, output) it computes."""
    calls: list[tuple[tf.Tensor, tf.Tensor]] = []

    def run(image: tf.Tensor) -> tf.Tensor:
        output = network.run(image)
        calls.append((image, output))
        return output

    return dataclasses.replace(network, run=run), calls


COMPARISONS: dict[StageName, Callable[[np.ndarray, np.ndarray], dict[str, Any]]] = {
    "localization": compare_masks,
    "segmentation": compare_probabilities,
}


def verify(
    imported: Mapping[StageName, Network],
    references: Mapping[StageName, Network],
    utils: Utils | PipelineFunctions,
    probe: Probe,
    config: InferenceConfig | None = None,
) -> dict[StageName, dict[str, Any]]:
    """Run the pipeline on the probe with the reference networks (the original's signatures), then each imported
    network on the very input its reference was given; the comparison of each imported stage's outputs."""
    recorded, calls = {}, {}
    for stage in STAGE_NAMES:
        recorded[stage], calls[stage] = _recording(references[stage])
    segmenter = Pipeline(recorded["localization"], recorded["segmentation"], utils, config)
    try:
        segmenter.segment(probe.ct.array_zyx, probe.ct.spacing_zyx, require_organs=False)
    except InputError as error:
        raise InputError(f"{probe.name}: cannot serve as the probe of the import: {error}") from error
    results = {}
    for stage, network in imported.items():
        (inputs, expected), *_ = calls[stage]
        result = COMPARISONS[stage](expected.numpy(), network.run(inputs).numpy())
        results[stage] = {
            **result,
            "probe": probe.name,
            "input_zyx": list(inputs.shape[2:]),
            "precision": network.precision,
        }
        logger.info("%s network imported: %s", stage, _figures(results[stage]))
    return results


def _figures(result: Mapping[str, Any]) -> str:
    shown = (
        "verdict",
        "dice",
        "foreground_voxels",
        "differing_voxels",
        "max_probability_difference",
        "argmax_agreement",
    )
    figures = ", ".join(f"{key} {result[key]}" for key in shown if key in result)
    return f"{figures} (in {result['precision']}, on {result['probe']}, input {result['input_zyx']})"


def import_networks(
    folders: Mapping[StageName, Path],
    stages: list[StageName],
    staging: Path,
    *,
    probe: Probe,
    device: Device,
    precision: str,
    utils: Utils | PipelineFunctions,
    config: InferenceConfig | None = None,
) -> dict[StageName, dict[str, Any]]:
    """Import the original-format networks of `stages` (in `folders`, which hold both stages) into
    `staging/<stage>`, and verify them there against the original's graphs; VerificationError with the figures if
    one disagrees. A stage not imported takes part in the probe's pipeline as loaded."""
    for stage in stages:
        _convert(stage, folders[stage], staging / stage)
    imported = {stage: load_network(staging / stage, stage, device, precision) for stage in stages}
    references = {stage: load_network(folders[stage], stage, device, precision) for stage in STAGE_NAMES}
    results = verify(imported, references, utils, probe, config)
    failed = {stage: result for stage, result in results.items() if result["verdict"] == "failed"}
    if failed:
        raise VerificationError(
            "the imported network(s) do not compute what the original's graph computes; nothing was written: "
            + "; ".join(f"{stage}: {_figures(result)}" for stage, result in failed.items())
        )
    for stage in stages:
        if results[stage]["verdict"] == "inconclusive":
            logger.warning(
                "%s: the original's localization finds no organ on %s, so its import could not be verified; "
                "give a CT with organs in view as the probe",
                folders[stage],
                probe.name,
            )
        update_metadata(
            staging / stage, {"imported": {"from": str(folders[stage].resolve()), "verification": results[stage]}}
        )
    return results


def _original_utils(source: ModelsFolder, device: Device) -> Utils | PipelineFunctions:
    """The original's traced pre/post-processing beside its networks, if there and on a GPU (its float16 smoothing
    has no CPU kernel, docs/fidelity.md #38), else the package's functions, equal to it."""
    folder = source.utils
    if not (folder / "saved_model.pb").is_file():
        return load_utils(None, device)
    if device == "cpu":
        logger.info("%s needs a GPU: making the probe's inputs with the package's pre/post-processing", folder)
        return load_utils(None, device)
    logger.info("%s: making the probe's inputs with the original's pre/post-processing", folder)
    return load_utils(folder, device)


def import_original(
    source: Path, destination: Path, *, probe: Path | None, device: Device, precision: str, overwrite: bool = False
) -> dict[StageName, dict[str, Any]]:
    """`efficientscn import-original`: the original's models folder `source` (localization/, segmentation/ and
    optionally tf_utils_module/) as our verified export in `destination`, written whole or not at all."""
    folders = ModelsFolder(source).stage_folders()
    for stage, folder in folders.items():
        if not is_original_savedmodel(folder, stage):
            raise InputError(
                f"{folder}: not the original's {stage} SavedModel (it has export metadata of ours, or its "
                "variables are not laid out as the original's)"
            )
    destination = refuse_existing(destination, overwrite=overwrite)
    if _related(source, destination):
        raise InputError(f"{destination}: is the source folder {source}, or holds it or lies in it; choose another")
    with staging_folder(destination) as staging:
        results = import_networks(
            folders,
            list(STAGE_NAMES),
            staging,
            probe=probe_from(probe),
            device=device,
            precision=precision,
            utils=_original_utils(ModelsFolder(source), device),
        )
        publish_folder(staging, destination)
    logger.info("wrote %s: the original's networks, imported and checked against their graphs", destination)
    return results


def _related(first: Path, second: Path) -> bool:
    """Whether one folder is the other or lies inside it (after resolving links)."""
    first, second = first.resolve(), second.resolve()
    return first == second or first in second.parents or second in first.parents


def _publish_import(staging: Path, target: Path) -> None:
    """Move a verified import into the cache, unless another run put a verified one there meanwhile."""
    if _verdict(target) == "verified":
        return
    try:
        publish_folder(staging, target)
    except OSError:
        if _verdict(target) != "verified":  # not a concurrent run's import: a real failure
            raise


def _verdict(folder: Path) -> str | None:
    """The verification verdict recorded in an import's metadata; None if there is no import there."""
    metadata = read_metadata(folder) if folder.is_dir() else None
    return metadata.get("imported", {}).get("verification", {}).get("verdict") if metadata else None


def imported_folders(folders: Mapping[StageName, Path], context: ImportContext) -> dict[StageName, Path]:
    """`folders` with each network in the original's format replaced by its verified import in the cache
    (imported on first use, on the context's probe CT, or the phantom if that cannot serve, and found there by
    content afterwards; an import a probe without organs left unverified is made again, on this run's probe).
    The importer of the original's format (`infer.importers`)."""
    device, precision = context.device, context.precision
    originals = [stage for stage in STAGE_NAMES if is_original_savedmodel(folders[stage], stage)]
    if not originals:
        return dict(folders)
    cache = cache_root() / "imported"
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale(cache)
    # verified in the precision it will run in: another precision is another entry
    targets = {stage: cache / f"{stage}-{fingerprint(folders[stage])}-{precision}" for stage in originals}
    todo = [stage for stage in originals if _verdict(targets[stage]) != "verified"]
    for stage in originals:
        if stage not in todo:
            how = "imported before into"
        elif _verdict(targets[stage]) is None:
            how = "importing it into"
        else:  # a probe without organs left it unverified: this run's CT may do better
            how = "imported before but not verified; importing it again into"
        logger.info("%s: the original's %s network, %s %s", folders[stage], stage, how, targets[stage])
    if todo:
        with staging_folder(targets[todo[0]]) as staging:
            import_networks(
                folders,
                todo,
                staging,
                probe=probe_or_phantom(context.probe, context.config),
                device=device,
                precision=precision,
                utils=context.utils,
                config=context.config,
            )
            for stage in todo:
                _publish_import(staging / stage, targets[stage])
    return {**folders, **targets}
