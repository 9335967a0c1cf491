"""Both networks of a models folder as ONNX files, to run without TensorFlow (ONNX Runtime, OpenVINO).

`export_onnx(models, output)` (the `export-onnx` command) writes `output/localization.onnx` and
`output/segmentation.onnx` from `models/localization/` and `models/segmentation/`, which must be our exports
(SavedModels with `assets.extra/efficientscn.json`, as `export` and `import-original` write them; the original's
released SavedModels need `import-original` first). Each file is the SavedModel's serving signature, the exported
network computed in float32 (not `load_network`'s graph: that one is optimised for TensorFlow's CPU kernels, which
tf2onnx cannot read), converted by `tf2onnx.convert.from_function` at opset 17, with Log1p (the SCN takes it of
exp(-|x|) in (0, 1]; ONNX has no such operator) written as Log(1 + x).

The files keep the SavedModels' interface:

- input `image`: float16 [N, 1, D, H, W], channels-first, spatial axes in z, y, x order: the CT resampled to the
  network's grid, HU / 2048 clamped to [-1, 1]. N, D, H and W are dynamic; D, H, W must be valid sizes of the
  network's input contract (for the paper's networks: localization multiples of 16, the SCN multiples of 32);
- output `output_0`: localization bool [N, 1, D, H, W], the organ foreground (foreground logit > background
  logit); segmentation float16 [N, 5, D, H, W], the normalised probabilities of labels 0-4 (background, liver,
  kidney, spleen, pancreas).

Each file's metadata (`metadata_props`, key `efficientscn`) holds the JSON of the stage, the network configuration
and the input contract (spacing in mm, valid sizes zyx, smoothing in mm) of its export: what a caller needs to
make the input. The pre- and post-processing (resampling, the organ box, upsampling, argmax) are not in the files.

Converting needs the `onnx` extra (tf2onnx and onnx; onnxruntime to run the files): `pip install -e ".[onnx]"`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from efficientscn.atomic import atomic_output
from efficientscn.errors import InputError
from efficientscn.model.folder import ModelsFolder
from efficientscn.model.specs import STAGE_NAMES, StageName

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
ONNX_PACKAGES = ("tf2onnx", "onnx")
"""What converting needs (the `onnx` extra also holds onnxruntime, which runs the files)."""
INSTALL_HINT = 'pip install -e ".[onnx]"'
INPUT_NAME, OUTPUT_NAME = "image", "output_0"
METADATA_KEY = "efficientscn"
"""The `metadata_props` key of the export's stage, network configuration and input contract (JSON)."""
DIMENSION_NAMES = ("N", None, "D", "H", "W")
"""The symbolic names given to the input's and output's dynamic axes (None: the channel axis, fixed)."""


def require_onnx_packages() -> None:
    """InputError with the install command when a package converting needs is missing (nothing imported)."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"ONNX export needs {' and '.join(missing)}, not installed: install the onnx extra with {INSTALL_HINT} "
            "in the repository"
        )


def onnx_paths(output: Path) -> dict[StageName, Path]:
    """The ONNX file of each stage in `output`: `<output>/<stage>.onnx`."""
    return {stage: Path(output) / f"{stage}.onnx" for stage in STAGE_NAMES}


def export_onnx(models: Path, output: Path, *, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> dict[str, Path]:
    """Convert both networks of `models` (our exports) to `output/localization.onnx` and `output/segmentation.onnx`.

    Checked before the first conversion: the packages (InputError with the install command), the existing files
    (FileExistsError naming them unless `overwrite`), that both SavedModel folders are there (InputError); whether
    each is our export is checked as it is converted. Each file is written atomically (complete or absent); a failure
    on the second leaves the first written.
    Returns the path of each stage's file.
    """
    require_onnx_packages()
    paths = onnx_paths(output)
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)}: already there (use --overwrite to replace)")
    folders = ModelsFolder(models).stage_folders()
    for stage in STAGE_NAMES:
        export_network(folders[stage], stage, paths[stage], opset=opset, overwrite=overwrite)
    return dict(paths)


def export_network(
    folder: Path, stage: StageName, path: Path, *, opset: int = DEFAULT_OPSET, overwrite: bool = False
) -> Path:
    """One stage's SavedModel (our export) in `folder` as the ONNX file `path`, written atomically; see the module
    docstring for the file's interface. FileExistsError if `path` exists, unless `overwrite`."""
    require_onnx_packages()
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already there (use --overwrite to replace)")
    model = convert_network(folder, stage, opset=opset)
    import onnx

    with atomic_output(path, suffix=".onnx", overwrite=overwrite) as temporary:
        onnx.save_model(model, str(temporary))
    logger.info("wrote %s", path)
    return path


def convert_network(folder: Path, stage: StageName, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """One stage's SavedModel (our export) as a checked ONNX model: its serving signature, converted by tf2onnx."""
    require_onnx_packages()
    import onnx
    import tensorflow as tf
    import tf2onnx

    from efficientscn.model.savedmodel import IMAGE_SIGNATURE, SIGNATURE

    metadata = _export_metadata(Path(folder), stage)
    try:
        saved = tf.saved_model.load(str(folder))  # held until converted: the signature holds its variables weakly
        serving = saved.signatures[SIGNATURE]
    except (KeyError, ValueError, OSError, tf.errors.OpError) as error:
        raise InputError(f"{folder}: cannot load the {stage} network: {type(error).__name__}: {error}") from error

    @tf.function(input_signature=[IMAGE_SIGNATURE])
    def network(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: serving(image=image)[OUTPUT_NAME]}  # a dict: tf2onnx names the output by its key

    logger.info("%s: converting the %s network to ONNX (opset %d)", folder, stage, opset)
    model, _ = tf2onnx.convert.from_function(
        network,
        input_signature=[IMAGE_SIGNATURE],
        opset=opset,
        custom_op_handlers={"Log1p": (_log1p_as_log, [])},
    )
    _name_dimensions(model)
    record = {key: metadata[key] for key in ("stage", "network", "contract") if key in metadata}
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(record)})
    onnx.checker.check_model(model)
    return model


def _export_metadata(folder: Path, stage: StageName) -> dict[str, Any]:
    """The export metadata of our SavedModel of `stage` in `folder`; InputError saying what `folder` is otherwise."""
    from efficientscn.model.savedmodel import METADATA_FILE, read_metadata

    metadata = read_metadata(folder)
    if metadata is None:
        from efficientscn.convert.original import is_original_savedmodel

        if is_original_savedmodel(folder, stage):
            raise InputError(
                f"{folder}: the original's released {stage} SavedModel, not our export; import it first "
                "(efficientscn import-original ORIGINAL_MODELS NEW_MODELS) and export NEW_MODELS to ONNX"
            )
        raise InputError(
            f"{folder}: not our export (no {METADATA_FILE}); export-onnx converts the SavedModels that export and "
            "import-original write"
        )
    if metadata.get("stage") != stage:
        raise InputError(f"{folder}: holds the {metadata.get('stage')!r} network, expected {stage!r}")
    return metadata


def _name_dimensions(model: onnx.ModelProto) -> None:
    """Name the dynamic axes of the input and the output N, D, H, W (tf2onnx leaves them "unk__<n>"), after checking
    that tf2onnx named the input and the output as the SavedModel's signature does."""
    names = ([value.name for value in model.graph.input], [value.name for value in model.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ValueError(f"tf2onnx named the inputs {names[0]} and outputs {names[1]}, expected image and output_0")
    for value in (*model.graph.input, *model.graph.output):
        dimensions = value.type.tensor_type.shape.dim
        if len(dimensions) != len(DIMENSION_NAMES):
            raise ValueError(f"ONNX {value.name}: {len(dimensions)} axes, expected [N, C, D, H, W]")
        for dimension, name in zip(dimensions, DIMENSION_NAMES, strict=True):
            if name is not None:
                dimension.dim_param = name


def _log1p_as_log(ctx: Any, node: Any, name: str, args: list[Any]) -> None:
    """tf2onnx handler: Log1p(x) as Log(1 + x) (ONNX has no Log1p; the SCN takes it of exp(-|x|) in (0, 1], where
    the sum loses nothing that matters in float32)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    total = ctx.make_node("Add", [node.input[0], one.output[0]], op_name_scope=node.name)
    ctx.replace_inputs(node, [total.output[0]])
    node.type = "Log"
    node.domain = ""
