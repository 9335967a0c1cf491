"""The package's layering: the four wings of inference and the training wing each stay in their place.

- inference never needs training (`TRAINING_STACK`);
- the engine (`infer/`, the public `segmenter.py`) imports neither the outputs, nor the `predict` batch, nor the
  conversions: the `Segmenter` reaches the original's importer through `infer.importers`, an entry point;
- the outputs load no TensorFlow and know nothing of the engine, the batch or the conversions;
- the conversions know nothing of the batch;
- reading CTs (`imaging/`), making training samples (`data/`, `augment/`) and the network configurations
  (`nn/config.py`) load no TensorFlow;
- no import cycle between modules, nor between packages, counting lazy and type-only imports too.

Checked statically, from every `import` statement in the package (lazy ones inside functions included), and at
run time, in fresh interpreters. The rules are also run on the arrows of the layout before the wings, which they
must refuse.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from helpers import REPO_ROOT, shared_case

PACKAGE = REPO_ROOT / "efficientscn"
TRAINING_STACK = (
    "efficientscn.train",
    "efficientscn.data",
    "efficientscn.augment",
    "efficientscn.evaluate",
    "efficientscn.metrics",
    "surface_distance",
    "scipy.ndimage",
)
"""What inference must never load: the training wing, its samples and augmentation, the evaluation metrics (the
last two entries are outside the package: the run-time test sees them, the import-statement test cannot)."""
TENSORFLOW = ("tensorflow", "keras", "tf2onnx")
ENGINE = ("efficientscn.infer", "efficientscn.segmenter")
OUTPUTS = ("efficientscn.outputs",)
BATCH = ("efficientscn.predict",)
CONVERSION = ("efficientscn.convert",)
INFERENCE = (*ENGINE, *OUTPUTS, *BATCH, *CONVERSION, "efficientscn.model", "efficientscn.imaging", "efficientscn.nn")
WITHOUT_TENSORFLOW = (
    *OUTPUTS,
    "efficientscn.imaging",
    "efficientscn.data",
    "efficientscn.augment",
    "efficientscn.nn.config",
    "efficientscn.labels",
    "efficientscn.atomic",
)

RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (INFERENCE, TRAINING_STACK, "inference needs nothing of training"),
    (ENGINE, (*OUTPUTS, *BATCH, *CONVERSION), "the engine imports no outputs, batch or conversion"),
    (OUTPUTS, (*ENGINE, *BATCH, *CONVERSION), "the outputs know nothing of the engine, batch or conversion"),
    (CONVERSION, BATCH, "the conversions know nothing of the batch"),
    (("efficientscn.model",), ENGINE, "the model layer stands below the engine"),
    (WITHOUT_TENSORFLOW, TENSORFLOW, "loads no TensorFlow"),
)
"""(what, what it must not reach, why): `what` may not reach anything of the second, directly or through others."""

Graph = dict[str, set[str]]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p) for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """What a file imports: package modules (resolved to modules, not names) and the outside top-level packages of
    `TENSORFLOW`, at module level or anywhere (lazy and type-only imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    outside = {name.split(".")[0] for name in found} & set(TENSORFLOW)
    return {name for name in found if name in MODULES} | outside


def _graph(*, top_level_only: bool) -> Graph:
    """Each package module -> what it imports (a package's face importing its own modules names itself: left out)."""
    graph = {_module_name(p): _imports(p, top_level_only=top_level_only) for p in PACKAGE.rglob("*.py")}
    return {module: targets - {module} for module, targets in graph.items()}


def _in(module: str, packages: Iterable[str]) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def _reachable(graph: Graph, start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for module in graph.get(todo.pop(), ()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def layer_violations(graph: Graph) -> list[str]:
    """Every module that reaches what a rule forbids it, with the rule."""
    found = []
    for sources, forbidden, why in RULES:
        for module in sorted(m for m in graph if _in(m, sources)):
            reached = sorted(m for m in _reachable(graph, module) if _in(m, forbidden) and not _in(m, sources))
            if reached:
                found.append(f"{module} reaches {', '.join(reached)}: {why}")
    return found


def _package(module: str) -> str:
    """The package a module belongs to (`efficientscn.imaging`), or the module itself at the package's top."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module


def cycles(graph: Graph, *, by_package: bool) -> list[list[str]]:
    """The import cycles of `graph`, between modules or between packages (each cycle once, from its first node)."""
    if by_package:
        packages: Graph = {}
        for module, targets in graph.items():
            packages.setdefault(_package(module), set()).update(
                _package(target) for target in targets if target in graph and _package(target) != _package(module)
            )
        graph = packages
    found: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target] if target in path else [*path, node, target])
            elif target not in state and target in graph:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_wing_stays_in_its_place() -> None:
    assert layer_violations(_graph(top_level_only=False)) == []


@pytest.mark.parametrize("by_package", [False, True], ids=["modules", "packages"])
def test_there_is_no_import_cycle_counting_lazy_and_type_only_imports(by_package: bool) -> None:
    assert cycles(_graph(top_level_only=False), by_package=by_package) == []


LAYOUT_BEFORE_THE_WINGS = {
    "the public Segmenter imported the original's importer": (
        "efficientscn.segmenter",
        "efficientscn.convert.original",
    ),
    "a writer asked the batch's cases whether a label counts": (
        "efficientscn.outputs.writers",
        "efficientscn.predict.cases",
    ),
    "a writer imported the batch's report module (TensorFlow)": (
        "efficientscn.outputs.writers",
        "efficientscn.predict.monitor",
    ),
    "atomic.py took ITK's naming rule from imaging/": ("efficientscn.atomic", "efficientscn.imaging.itk_path"),
    "savedmodel.py typed save_network with specs.py's ModelSpec": (
        "efficientscn.model.savedmodel",
        "efficientscn.model.specs",
    ),
    "nn/ took its configurations from model/, which builds through nn/": (
        "efficientscn.nn.localization",
        "efficientscn.model.specs",
    ),
}
"""The arrows against the wings and the cycles of the layout before them (a review found them at db09321), each
written as the arrow it would be in today's modules."""


@pytest.mark.parametrize("arrow", LAYOUT_BEFORE_THE_WINGS.values(), ids=list(LAYOUT_BEFORE_THE_WINGS))
def test_the_rules_refuse_each_arrow_of_the_layout_before_the_wings(arrow: tuple[str, str]) -> None:
    graph = _graph(top_level_only=False)
    source, target = arrow
    graph[source] = {*graph[source], target}
    problems = layer_violations(graph) + [str(c) for by in (False, True) for c in cycles(graph, by_package=by)]
    assert problems, f"{source} -> {target} went unnoticed"


def _loaded_after(code: str, cwd: Path) -> list[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_outputs_and_the_command_line_load_no_tensorflow(tmp_path: Path) -> None:
    """The outputs work on arrays and images; building `predict`'s options must leave TensorFlow unloaded, since
    the command sets TensorFlow's allocator up before it is imported."""
    modules = sorted(m for m in MODULES if _in(m, WITHOUT_TENSORFLOW))
    code = "\n".join(f"import {m}" for m in modules) + "\nfrom efficientscn.cli import build_parser\nbuild_parser()"
    loaded = _loaded_after(code, tmp_path)
    assert [m for m in loaded if _in(m, TENSORFLOW)] == []


def test_segmenting_a_ct_loads_no_training_module(tmp_path: Path) -> None:
    """`efficientscn predict` on a real CT, in a fresh interpreter, with the shipped models."""
    image, output = shared_case("ts_example_ct_sm").image, tmp_path / "out"
    code = f"""
from efficientscn.cli import main
status = main(["predict", "-i", {str(image)!r}, "-o", {str(output)!r}, "--device", "cpu", "-q"])
assert status == 0, status
"""
    loaded = _loaded_after(code, tmp_path)
    assert (output / "example_ct_sm.nii.gz").is_file()
    assert "efficientscn.predict.run" in loaded
    assert [module for module in loaded if _in(module, TRAINING_STACK)] == []
