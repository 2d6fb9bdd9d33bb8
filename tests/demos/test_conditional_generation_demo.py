import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[2] / "demos" / "conditional_generation.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("conditional_generation_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entity_mentions_are_read_from_both_bundled_corpora():
    demo = _load_demo()
    texts, labels = demo.load_entity_names()
    assert set(labels) == {"PER", "LOC", "ORG", "MISC"}
    assert len(texts) > 4000 and len(set(zip(texts, labels))) == len(texts)


def test_conll_reader_iob1_and_bio(tmp_path):
    demo = _load_demo()
    iob1 = tmp_path / "iob1.txt"
    iob1.write_text(
        "-DOCSTART- O\n\nJohn I-PER\nSmith I-PER\nB-sep B-PER\nmet O\n"
        "New I-LOC\nYork I-LOC\nAcme I-ORG\n\nParis I-LOC\n"
    )
    assert demo._conll_mentions(iob1) == [
        ("John Smith", "PER"),
        ("B-sep", "PER"),
        ("New York", "LOC"),
        ("Acme", "ORG"),
        ("Paris", "LOC"),
    ]
    bio = tmp_path / "bio.txt"
    bio.write_text("Ada\tB-person\nLovelace\tI-person\nand\tO\nBob\tB-person\nCarol\tB-person\n")
    assert demo._conll_mentions(bio, sep="\t") == [
        ("Ada Lovelace", "person"),
        ("Bob", "person"),
        ("Carol", "person"),
    ]


@pytest.mark.slow
def test_demo_smoke_run(capsys):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("end-to-end demo runs on the default backend only")
    demo = _load_demo()
    result = demo.main(["--smoke"])
    out = capsys.readouterr().out
    assert np.isfinite(result["perplexity_true"]) and np.isfinite(result["perplexity_shuffled"])
    assert "samples" in out and "shuffled" in out
    for name in ("LOC", "MISC", "ORG", "PER"):
        assert name in result["per_class"]
