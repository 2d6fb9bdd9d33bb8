import importlib.util
import os

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_flooding_demo_smoke(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("demos run end to end on the default backend only")
    spec = importlib.util.spec_from_file_location("flooding_demo", os.path.join(ROOT, "demos", "flooding.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    results = demo.main(["--smoke", "--output", str(tmp_path)])
    assert (tmp_path / "flooding_curves.png").exists()
    assert len(results) == 3
    for r in results.values():
        assert 0.0 <= r["test_acc"] <= 1.0 and r["test_loss"] > 0
