"""The minimum-Keras tier must cover every module that uses Keras internals.

CI runs the full suite on the latest Keras, and on the minimum Keras that
pyproject.toml declares only the docstring examples and the tests of the
modules that import `keras_tricks/_keras_compat.py` (the marker
`keras_internals`, set from the repository's conftest.py). A module that starts
using Keras internals without an entry there would go untested on the floor.
"""

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports_keras_compat(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if (node.module or "").endswith("_keras_compat") or "_keras_compat" in names:
                return True
        elif isinstance(node, ast.Import) and any(a.name.endswith("_keras_compat") for a in node.names):
            return True
    return False


def _floor_map():
    spec = importlib.util.spec_from_file_location("_repo_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.KERAS_INTERNALS_TESTS


def test_every_module_using_keras_internals_has_floor_tests():
    users = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "keras_tricks").rglob("*.py")
        if p.name != "_keras_compat.py" and _imports_keras_compat(p)
    }
    mapped = _floor_map()
    assert users, "no module imports _keras_compat: the scan is broken"
    assert users - set(mapped) == set(), "add these to KERAS_INTERNALS_TESTS in conftest.py"
    assert set(mapped) - users == set(), "these no longer use Keras internals: drop them"
    for module, files in mapped.items():
        assert files, module
        for f in files:
            assert (ROOT / f).is_file(), f"{module}: {f} does not exist"


def test_the_marker_reaches_the_items(request):
    # This file is not in the map: its own items carry no marker.
    assert request.node.get_closest_marker("keras_internals") is None
