"""The package's layering: inference stands alone, the model layer below both wings, no import cycle.

Checked twice: statically, from every `import` statement in the package (lazy ones inside functions included),
and at run time, by segmenting a CT in a fresh interpreter and listing what it loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

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


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The efficientscn modules a file imports (resolved to modules, not names), at module level or anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, top_level_only=top_level_only) for p in PACKAGE.rglob("*.py")}


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every package module `start` imports, directly or through others (lazy imports included)."""
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            module = target if target in graph else target.rsplit(".", 1)[0]
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def test_inference_and_the_model_layer_reach_nothing_of_training() -> None:
    graph = _graph(top_level_only=False)
    lower = ("efficientscn.infer", "efficientscn.model", "efficientscn.imaging", "efficientscn.nn")
    reached = {module: sorted(m for m in _reachable(graph, module) if _in(m, TRAINING_STACK)) for module in graph}
    assert {module: found for module, found in reached.items() if _in(module, lower) and found} == {}
    model_up = {m: sorted(t for t in _reachable(graph, m) if _in(t, ("efficientscn.infer",))) for m in graph}
    assert {m: found for m, found in model_up.items() if _in(m, ("efficientscn.model",)) and found} == {}


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph(top_level_only=True)
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            target = target if target in graph else target.rsplit(".", 1)[0]
            assert state.get(target) != "open", f"import cycle: {' -> '.join([*path, module, target])}"
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_segmenting_a_ct_loads_no_training_module(tmp_path: Path) -> None:
    """`efficientscn predict` on a real CT, in a fresh interpreter, with the shipped models."""
    script = f"""
import json, sys
from efficientscn.cli import main
status = main(["predict", "-i", {str(shared_case("ts_example_ct_sm").image)!r}, "-o", {str(tmp_path / "out")!r},
               "--device", "cpu", "-q"])
print(json.dumps([status, sorted(sys.modules)]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    status, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 0 and (tmp_path / "out" / "example_ct_sm.nii.gz").is_file()
    assert "efficientscn.predict" in loaded
    assert [module for module in loaded if _in(module, TRAINING_STACK)] == []
