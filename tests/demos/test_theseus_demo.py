"""demos/theseus.py: a smoke run (seconds); the compressed model has the
successor-alone architecture's parameter count and no teacher weight."""

import importlib.util
import os

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="demo test runs on TF only")
def test_smoke_run():
    spec = importlib.util.spec_from_file_location("theseus_demo", os.path.join(ROOT, "demos", "theseus.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = demo.main(["--smoke"])
    assert set(out) == {"teacher (6 blocks)", "successor alone (3)", "Theseus (3)"}
    assert (
        out["Theseus (3)"]["params"]
        == out["successor alone (3)"]["params"]
        < out["teacher (6 blocks)"]["params"]
    )
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in out.values())
