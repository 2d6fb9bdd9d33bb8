"""No import cycle between the modules of keras_tricks.

Imports inside functions count too: a cycle hidden behind a function-level
import still ties two modules together (the multitask train step and model
did, and the strategy registry imported the package that imports it).
Packages' `__init__` modules only re-export, so edges into them are left out
(`from keras_tricks import _backend` is an edge to `keras_tricks._backend`).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "keras_tricks"


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    packages = {_module_name(p) for p in PACKAGE.rglob("__init__.py")}
    graph = {}
    for name, path in files.items():
        if name in packages:
            continue
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from a.b import c`: c is a module, or a name defined in a.b
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges.update(t for t in targets if t in files and t not in packages and t != name)
        graph[name] = edges
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_graph_sees_imports():
    graph = _graph()
    assert "keras_tricks._validation" in graph["keras_tricks.layers._span_base"]
    assert "keras_tricks.multitask._train_step" in graph["keras_tricks.multitask.multi_task_model"]


def test_no_import_cycle_between_modules():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_module_imports_from_its_own_package_init():
    """`from keras_tricks.multitask import STRATEGIES` inside
    `keras_tricks.multitask.strategy` imported the package whose `__init__`
    imports that very module: the registry now lives in `strategy.py`."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    packages = {_module_name(p) for p in PACKAGE.rglob("__init__.py")}
    found = []
    for name, path in files.items():
        if name in packages:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in packages:
                if node.module != "keras_tricks" and name.startswith(node.module + "."):
                    names = [a.name for a in node.names if f"{node.module}.{a.name}" not in files]
                    if names:
                        found.append(f"{name}: from {node.module} import {', '.join(names)}")
    assert not found, found
