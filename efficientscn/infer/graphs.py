"""Traced functions kept as frozen graphs in the cache: traced once, then loaded without Python tracing.

Tracing the networks (Keras layers called in a tf.function) and the pipeline's functions, and optimising them on
their first call, took about 11 s of a lone CT's 18.7 s run, every run. A frozen graph (the concrete function with
its variables made constants) holds the same ops, loads in well under a second and computes the same values. It is
kept under `<cache>/graphs/<name>-<key>-<code key>.pb`: the key names what the graph was traced from (the
SavedModel's content, the precision, the device), the code key the software that traced it (`code_key`), so a
changed model or another version of this package traces anew. A cache that cannot be written costs only the time:
the graph is traced and used all the same; a cached file that cannot be used is traced again.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
from tensorflow.python.grappler import tf_optimizer

from efficientscn.atomic import atomic_output
from efficientscn.infer.cache import cache_root, remove_stale

logger = logging.getLogger(__name__)

GRAPHS_FOLDER = "graphs"
_SIGNATURE = "call"
_PACKAGE = Path(__file__).resolve().parents[1]
GRAPH_ROOTS = ("efficientscn.infer.ops", "efficientscn.infer.utils_module", "efficientscn.infer.models", __name__)
"""The modules that trace and freeze graphs: the pre/post-processing functions, the networks rebuilt from exports,
and the freezing itself. What they import decides what a graph holds too (`graph_sources`)."""


def graph_sources(package: Path = _PACKAGE) -> list[Path]:
    """The package's files whose code decides what a traced graph holds: `GRAPH_ROOTS` and every package module they
    import, directly or through others, lazily or not (the networks, their configurations, the precision policy).
    The outputs, the `predict` batch, the conversions and the cascade around the graphs are not among them, so an
    edit there keeps the cache."""
    seen: dict[str, Path] = {}
    todo, inside = list(GRAPH_ROOTS), f"{package.name}."
    while todo:
        module = todo.pop()
        path = _module_file(package, module)
        if module in seen or path is None:
            continue
        seen[module] = path
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names if alias.name.startswith(inside))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and f"{node.module}.".startswith(inside):
                todo.append(node.module)
                todo.extend(f"{node.module}.{alias.name}" for alias in node.names)  # submodules by name
    return sorted(seen.values())


def _module_file(package: Path, module: str) -> Path | None:
    """The file of a module of `package` (a package's `__init__.py`), or None for a name that is not a module."""
    parts = module.split(".")[1:]
    for path in (package.joinpath(*parts).with_suffix(".py"), package.joinpath(*parts, "__init__.py")):
        if parts and path.is_file():
            return path
    return None


@functools.cache
def code_key(package: Path = _PACKAGE) -> str:
    """A short hash of the code that decides what a traced graph holds (`graph_sources`), the versions of
    TensorFlow and Keras, and whether TensorFlow's oneDNN operations are on (the CPU fusions the graphs are
    optimised for)."""
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
    digest = hashlib.sha256(f"{tf.__version__} {keras.__version__} {onednn}".encode())
    for file in graph_sources(package):
        digest.update(file.relative_to(package).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def freeze(function: Any, device: str) -> tf.compat.v1.MetaGraphDef:
    """A concrete function as a frozen graph, its inputs and outputs named by position in its signature, and
    optimised once by Grappler as a function call would be (less than half the nodes for the SCN; on the CPU its
    nodes are placed there first, so that convolutions fuse with their bias and activation as at run time), so that
    runs inside `without_graph_optimisation` need not optimise it again."""
    frozen = convert_variables_to_constants_v2(function)
    meta = tf.compat.v1.MetaGraphDef()
    meta.graph_def.CopyFrom(frozen.graph.as_graph_def())
    signature = meta.signature_def[_SIGNATURE]
    for entries, tensors in ((signature.inputs, frozen.inputs), (signature.outputs, frozen.outputs)):
        for index, tensor in enumerate(tensors):
            entries[str(index)].CopyFrom(_tensor_info(tensor))
    fetched = meta.collection_def["train_op"].node_list.value  # what Grappler must keep: the outputs
    fetched.extend(tensor.name for tensor in frozen.outputs)
    if device == "cpu":
        for node in meta.graph_def.node:
            node.device = "/device:CPU:0"
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.min_graph_nodes = -1  # optimise even a small graph
    optimised = tf_optimizer.OptimizeGraph(config, meta)
    del meta.collection_def["train_op"]
    meta.graph_def.CopyFrom(optimised)
    return meta


def _tensor_info(tensor: tf.Tensor) -> tf.compat.v1.TensorInfo:
    return tf.compat.v1.TensorInfo(
        name=tensor.name, dtype=tensor.dtype.as_datatype_enum, tensor_shape=tensor.shape.as_proto()
    )


def as_function(meta: tf.compat.v1.MetaGraphDef) -> Callable[..., Any]:
    """A frozen graph as a callable: positional tensors in; one tensor, or a list of them, out."""
    signature = meta.signature_def[_SIGNATURE]
    inputs = [signature.inputs[str(index)] for index in range(len(signature.inputs))]
    outputs = [signature.outputs[str(index)].name for index in range(len(signature.outputs))]
    specs = [tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.dtypes.as_dtype(info.dtype)) for info in inputs]

    def imported(*arguments: tf.Tensor) -> list[tf.Tensor]:
        mapping = {info.name: argument for info, argument in zip(inputs, arguments, strict=True)}
        return tf.graph_util.import_graph_def(meta.graph_def, input_map=mapping, return_elements=outputs)

    function = tf.compat.v1.wrap_function(imported, specs)
    if len(outputs) == 1:
        return lambda *arguments: function(*arguments)[0]
    return function


_blocks_lock = threading.Lock()
_blocks_open = 0
"""`without_graph_optimisation` blocks open in this process, in any thread."""
_setting_before = False
"""Grappler's switch as the first of the open blocks found it."""


@contextlib.contextmanager
def without_graph_optimisation(device: str) -> Iterator[None]:
    """On the CPU (`device` "cpu"), run functions first called in this block without Grappler: the frozen graphs
    were optimised for it when frozen, and optimising them again on their first call took about 1 s of a lone CT's
    run. (A GPU keeps Grappler: its layout and fusion passes need the placement; any other `device` leaves it on.)
    The setting is process-wide: the one found by the first block to open is restored when the last one closes, in
    whichever threads they run."""
    if device != "cpu":
        yield
        return
    global _blocks_open, _setting_before
    with _blocks_lock:  # threads may enter and leave blocks in any order: the first in saves, the last out restores
        if _blocks_open == 0:
            _setting_before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        _blocks_open += 1
    try:
        yield
    finally:
        with _blocks_lock:
            _blocks_open -= 1
            if _blocks_open == 0:
                tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": _setting_before})


def _read(path: Path) -> tf.compat.v1.MetaGraphDef | None:
    """The frozen graph at `path`; None (and a warning) if it cannot be read."""
    meta = tf.compat.v1.MetaGraphDef()
    try:
        meta.ParseFromString(path.read_bytes())
    except (OSError, DecodeError) as error:
        logger.warning("%s: cannot read this cached graph (%s); tracing it again", path, error)
        return None
    if _SIGNATURE not in meta.signature_def:
        logger.warning("%s: not a cached graph of this package; tracing it again", path)
        return None
    return meta


def _write(meta: tf.compat.v1.MetaGraphDef, path: Path) -> bool:
    """Keep `meta` at `path` for later runs; a cache that cannot be written is said in the log, not fatal."""
    try:
        with atomic_output(path, overwrite=True) as temporary:
            temporary.write_bytes(meta.SerializeToString())
    except OSError as error:
        logger.warning("%s: cannot keep the traced graph for later runs (%s)", path, error)
        return False
    remove_stale(path.parent, ".*.partial*")  # a killed run's temporaries
    return True


def _cached(path: Path) -> Callable[..., Any] | None:
    """The usable frozen graph at `path`, or None (with a warning if there is a file that cannot be used)."""
    meta = _read(path) if path.is_file() else None
    if meta is None:
        return None
    try:
        return as_function(meta)
    except (ValueError, TypeError, KeyError, tf.errors.OpError) as error:  # e.g. an op this TensorFlow lacks
        logger.warning("%s: cannot use this cached graph (%s); tracing it again", path, error)
        return None


_building_announced = threading.Event()


def _announce_building(folder: Path) -> None:
    """Say once per process, before the first trace, why this run takes longer than the next ones."""
    if not _building_announced.is_set():
        _building_announced.set()
        logger.info(
            "building the graphs of these models (once for these models, precision and package version, about 30 s); "
            "later runs load them from %s",
            folder,
        )


def cached_graph(name: str, key: str, trace: Callable[[], tf.compat.v1.MetaGraphDef]) -> Callable[..., Any]:
    """The graph `name` for `key` from the cache, or `trace()` (a `freeze`d concrete function) kept there.

    Either way the frozen graph is what runs, so a first run and a later one compute alike.
    """
    path = cache_root() / GRAPHS_FOLDER / f"{name}-{key}-{code_key()}.pb"
    function = _cached(path)
    if function is not None:
        return function
    _announce_building(path.parent)
    start = time.perf_counter()
    meta = trace()
    kept = f"kept in {path}" if _write(meta, path) else "not kept"
    logger.info("traced %s in %.1f s, %s", name, time.perf_counter() - start, kept)
    return as_function(meta)
