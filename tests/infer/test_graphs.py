"""Frozen graphs in the cache: they compute what was traced, are found again instead of traced, and survive a bad
or unwritable cache."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from efficientscn.infer import graphs
from efficientscn.infer.graphs import (
    as_function,
    cached_graph,
    code_key,
    freeze,
    graph_sources,
    without_graph_optimisation,
)


class _Scaled(tf.Module):
    """A function with a variable and two outputs, as the networks and the pipeline's functions have."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = tf.Variable([[1.5, -2.0], [0.25, 3.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([], tf.int32)])
    def __call__(self, values: tf.Tensor, count: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        product = tf.matmul(values, self.weight)
        return product, tf.reduce_sum(product[:count], axis=0)


def _freeze_scaled() -> tf.compat.v1.MetaGraphDef:
    module = _Scaled()
    return freeze(module.__call__.get_concrete_function(), "cpu")


def test_a_frozen_graph_computes_what_was_traced() -> None:
    module = _Scaled()
    values = tf.constant(np.random.default_rng(0).normal(size=(7, 2)), tf.float32)
    expected = module(values, tf.constant(3))
    frozen = as_function(freeze(module.__call__.get_concrete_function(), "cpu"))
    module.weight.assign(tf.zeros([2, 2]))  # the graph holds the values frozen, not the variable
    for mine, theirs in zip(frozen(values, tf.constant(3)), expected, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert frozen(tf.ones([4, 2]), tf.constant(4))[1].numpy().tolist() == [7.0, 4.0]  # any batch size


def test_a_graph_is_traced_once_then_found_in_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EFFICIENTSCN_CACHE", str(tmp_path))
    traces: list[str] = []

    def trace() -> tf.compat.v1.MetaGraphDef:
        traces.append("traced")
        return _freeze_scaled()

    first = cached_graph("scaled", "key", trace)
    second = cached_graph("scaled", "key", trace)
    other = cached_graph("scaled", "other-key", trace)
    assert traces == ["traced", "traced"]  # the second call read the first one's file
    assert [path.name for path in sorted((tmp_path / "graphs").iterdir())] == [
        f"scaled-key-{code_key()}.pb",
        f"scaled-other-key-{code_key()}.pb",
    ]
    values = tf.ones([2, 2])
    for function in (second, other):
        np.testing.assert_array_equal(function(values, tf.constant(1))[0].numpy(), first(values, tf.constant(1))[0])


def test_a_corrupt_cached_graph_is_traced_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EFFICIENTSCN_CACHE", str(tmp_path))
    path = tmp_path / "graphs" / f"scaled-key-{code_key()}.pb"
    path.parent.mkdir()
    path.write_bytes(b"\x00not a graph")
    with caplog.at_level(logging.WARNING):
        function = cached_graph("scaled", "key", _freeze_scaled)
    assert "cannot read this cached graph" in caplog.text or "not a cached graph" in caplog.text
    assert function(tf.ones([1, 2]), tf.constant(1))[1].numpy().tolist() == [1.75, 1.0]
    assert path.stat().st_size > 100  # replaced by the good one


def test_a_cached_graph_this_tensorflow_cannot_run_is_traced_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EFFICIENTSCN_CACHE", str(tmp_path))
    foreign = _freeze_scaled()
    foreign.graph_def.node.add(name="unknown", op="AnOpNoTensorFlowHas")
    path = tmp_path / "graphs" / f"scaled-key-{code_key()}.pb"
    path.parent.mkdir()
    path.write_bytes(foreign.SerializeToString())
    with caplog.at_level(logging.WARNING):
        function = cached_graph("scaled", "key", _freeze_scaled)
    assert "cannot use this cached graph" in caplog.text
    assert function(tf.ones([1, 2]), tf.constant(1))[1].numpy().tolist() == [1.75, 1.0]


def test_an_unwritable_cache_costs_only_the_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("EFFICIENTSCN_CACHE", str(blocked))
    with caplog.at_level(logging.WARNING):
        function = cached_graph("scaled", "key", _freeze_scaled)
    assert "cannot keep the traced graph for later runs" in caplog.text
    assert function(tf.ones([1, 2]), tf.constant(1))[1].numpy().tolist() == [1.75, 1.0]


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the package's code to edit."""
    copy = tmp_path / "efficientscn"
    shutil.copytree(Path(graphs.__file__).parents[1], copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.mark.parametrize(
    "edited",
    ["nn/unet.py", "nn/config.py", "infer/ops.py", "model/specs.py", "model/precision.py", "imaging/resample.py"],
)
def test_an_edit_to_what_the_graphs_are_traced_from_keys_new_graphs(package_copy: Path, edited: str) -> None:
    before = code_key(package_copy)
    with (package_copy / edited).open("a") as file:
        file.write("\nEDITED = True\n")
    assert code_key.__wrapped__(package_copy) != before


@pytest.mark.parametrize(
    "edited",
    [
        "outputs/dicom_seg.py",
        "outputs/writers.py",
        "predict/run.py",
        "predict/plausibility.py",
        "convert/onnx.py",
        "infer/pipeline.py",
        "segmenter.py",
        "cli.py",
        "train/loop.py",
    ],
)
def test_an_edit_to_an_output_the_batch_or_the_cascade_keeps_the_cached_graphs(package_copy: Path, edited: str) -> None:
    before = code_key(package_copy)
    with (package_copy / edited).open("a") as file:
        file.write("\nEDITED = True\n")
    assert code_key.__wrapped__(package_copy) == before
    assert package_copy / edited not in graph_sources(package_copy)


def test_graph_optimisation_is_off_on_the_cpu_only_inside_the_block() -> None:
    def disabled() -> bool:
        return bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))

    assert not disabled()
    with without_graph_optimisation("cpu"):
        assert disabled()
    assert not disabled()
    with without_graph_optimisation("gpu"):  # a GPU's layout and fusion passes need its placement
        assert not disabled()


def test_blocks_that_overlap_in_any_order_keep_grappler_off_until_the_last_closes() -> None:
    """Two threads segmenting at once: one block may close while the other is still open, in either order."""

    def disabled() -> bool:
        return tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)

    first, second = without_graph_optimisation("cpu"), without_graph_optimisation("cpu")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to open closes first
    assert disabled()
    second.__exit__(None, None, None)
    assert not disabled()
    failures: list[BaseException] = []

    def segment_a_while() -> None:
        try:
            for _ in range(200):
                with without_graph_optimisation("cpu"):
                    assert disabled()
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=segment_a_while) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and not disabled()


def test_a_killed_runs_leftovers_in_the_cache_are_removed_after_a_day(tmp_path: Path) -> None:
    from efficientscn.infer.cache import STALE_SECONDS, remove_stale

    old_file, old_folder = tmp_path / ".scn.1a2b.partial.pb", tmp_path / ".staging-import"
    new_file, kept = tmp_path / ".loc.3c4d.partial.pb", tmp_path / "scn-key-code.pb"
    old_folder.mkdir()
    (old_folder / "saved_model.pb").write_bytes(b"half an import")
    for path in (old_file, new_file, kept):
        path.write_bytes(b"graph")
    a_day_ago = time.time() - STALE_SECONDS - 60
    for path in (old_file, old_folder, kept):
        os.utime(path, (a_day_ago, a_day_ago))
    remove_stale(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".loc.3c4d.partial.pb", "scn-key-code.pb"]
