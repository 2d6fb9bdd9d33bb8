"""End-to-end smoke run of demos/ner_global_pointer.py (TensorFlow only)."""

import importlib.util
import json
import os

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _demo():
    path = os.path.join(ROOT, "demos", "ner_global_pointer.py")
    spec = importlib.util.spec_from_file_location("ner_global_pointer_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="demo test runs on TF only")
def test_demo_smoke_runs_both_heads(tmp_path):
    results = _demo().main(["--smoke"])
    assert [r["head"] for r in results] == ["global", "bio"]
    for r in results:
        assert 0.0 <= r["p"] <= 1.0 and 0.0 <= r["r"] <= 1.0 and 0.0 <= r["f1"] <= 1.0


def test_demo_readers_and_span_conversion(tmp_path):
    demo = _demo()
    # IOB1 (wikigold) and BIO: I- after O or another type starts an entity;
    # B- separates two adjacent entities of one type.
    assert demo.tags_to_spans(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == [
        (0, 1, "PER"), (2, 2, "PER"), (4, 4, "LOC"), (5, 5, "ORG")]
    assert demo.tags_to_spans(["B-X", "I-X", "O", "B-Y"]) == [(0, 1, "X"), (3, 3, "Y")]
    conll = tmp_path / "a.conll"
    conll.write_text("-DOCSTART- O\n\nJohn B-PER\nlives O\nin O\nParis B-LOC\n\nOk O\n")
    sents = demo.read_any(str(conll))
    assert [s.spans for s in sents] == [[(0, 0, "PER"), (3, 3, "LOC")], []]
    cluener = tmp_path / "c.json"
    cluener.write_text(json.dumps({"text": "浙商银行叶老桂", "label": {
        "company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[4, 6]]}}}, ensure_ascii=False) + "\n")
    s = demo.read_any(str(cluener))[0]
    assert s.tokens[:2] == ["浙", "商"] and s.spans == [(0, 3, "company"), (4, 6, "name")]
    genia = tmp_path / "g.jsonlines"
    genia.write_text(json.dumps({"tokens": ["IL-2", "gene", "expression"], "entity_mentions": [
        {"start": 0, "end": 2, "entity_type": "DNA"}, {"start": 0, "end": 1, "entity_type": "protein"}]}) + "\n")
    s = demo.read_any(str(genia))[0]
    assert s.spans == [(0, 0, "protein"), (0, 1, "DNA")]
    assert demo.outermost(s.spans) == [(0, 1, "DNA")]
    assert demo.prf([{(0, 1, "A"), (2, 2, "B")}], [{(0, 1, "A"), (3, 3, "B")}]) == (0.5, 0.5, 0.5)
