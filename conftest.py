"""Repository-wide pytest hook: docstring examples carry the `doctest` marker,
so that `-m "harness or doctest"` (run_backends.py's harness tier) selects them."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker("doctest")
