"""demos/hub_ner.py end to end (TensorFlow only, slow tier): on a randomly
initialised backbone, and through the `--preset` path on a preset written
locally by keras_hub's `save_to_preset` (random weights: nothing is
downloaded)."""

import importlib.util
import os

import keras
import pytest

# keras_hub 0.32 needs Keras >= 3.15 (it imports Keras internals that 3.10,
# our minimum, lacks): skipped there, as where it is not installed.
keras_hub = pytest.importorskip("keras_hub", exc_type=ImportError)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="demo test runs on TF only"),
]


def _demo():
    path = os.path.join(ROOT, "demos", "hub_ner.py")
    spec = importlib.util.spec_from_file_location("hub_ner_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(result):
    assert result["types"] == ["LOC", "MISC", "ORG", "PER"]
    assert all(0.0 <= result[k] <= 1.0 for k in ("p", "r", "f1")) and result["seconds"] > 0


def test_smoke_on_a_random_backbone():
    result = _demo().main(["--smoke"])
    assert result["source"].startswith("random bert")
    _check(result)


def test_smoke_through_a_local_preset(tmp_path):
    demo = _demo()
    words = ["the", "of", "in", "and", "to"] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    vocabulary = demo.SPECIALS + list("abcdefghijklmnopqrstuvwxyz") + words
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=32,
    )
    backbone.save_to_preset(str(tmp_path))
    tokenizer.save_to_preset(str(tmp_path))
    pieces = demo.WordPieces([], tokenizer)
    assert (pieces.start, pieces.end, pieces.pad) == (2, 3, 0) and len(pieces("cat")) == 3
    result = demo.main(["--smoke", "--preset", str(tmp_path)])
    assert result["source"] == f"preset {tmp_path}"
    _check(result)
