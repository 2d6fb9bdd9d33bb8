"""demos/re_gplinker.py: the CoNLL04 reader (BILOU tags, entity indices) and
a smoke run on a tiny synthetic file written here (never the shared data)."""

import importlib.util
import json
import os

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _demo():
    path = os.path.join(ROOT, "demos", "re_gplinker.py")
    spec = importlib.util.spec_from_file_location("re_gplinker_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDS = [
    {
        "tokens": ["John", "Smith", "works", "for", "Acme", "Corp", "in", "Paris", "."],
        "tags": ["B-Peop", "L-Peop", "O", "O", "B-Org", "L-Org", "O", "U-Loc", "O"],
        "relations": [
            {"head": 0, "tail": 1, "type": "Work_For"},
            {"head": 1, "tail": 2, "type": "OrgBased_In"},
        ],
    },
    {
        "tokens": ["Mary", "lives", "in", "New", "York", "City"],
        "tags": ["U-Peop", "O", "O", "B-Loc", "I-Loc", "L-Loc"],
        "relations": [{"head": 0, "tail": 1, "type": "Live_In"}],
    },
    {"tokens": ["Nothing", "here"], "tags": ["O", "O"], "relations": []},
]


def test_reader_turns_entity_indices_into_span_triples(tmp_path):
    demo = _demo()
    assert demo.bilou_to_spans(["B-X", "I-X", "L-X", "U-Y", "O", "U-Y"]) == [
        (0, 2, "X"),
        (3, 3, "Y"),
        (5, 5, "Y"),
    ]
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(RECORDS))
    sents = demo.read_conll04(str(path))
    assert sents[0].triples == [((0, 1), "Work_For", (4, 5)), ((4, 5), "OrgBased_In", (7, 7))]
    assert sents[1].triples == [((0, 0), "Live_In", (3, 5))]
    assert sents[2].triples == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([dict(RECORDS[1], relations=[{"head": 0, "tail": 5, "type": "Live_In"}])]))
    with pytest.raises(ValueError, match="record 0"):
        demo.read_conll04(str(bad))


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="demo test runs on TF only")
def test_demo_smoke_run(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(RECORDS * 8))
    result = _demo().main(["--train", str(path), "--test", str(path), "--smoke", "--verbose", "0"])
    assert 0.0 <= result["p"] <= 1.0 and 0.0 <= result["r"] <= 1.0 and 0.0 <= result["f1"] <= 1.0
    assert len(result["curve"]) == 1


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="demo test runs on TF only")
def test_pipeline_baseline_smoke_run(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(RECORDS * 8))
    args = ["--train", str(path), "--test", str(path), "--smoke", "--verbose", "0", "--pipeline"]
    result = _demo().main(args)
    assert 0.0 <= result["f1"] <= 1.0 and len(result["curve"]) == 1


def test_pipeline_pairs_and_targets_by_hand():
    import numpy as np

    demo = _demo()
    pairs = demo.pair_array([[((0, 1), (4, 5)), ((4, 5), (0, 1))], []])
    assert pairs.shape == (2, 2, 4) and pairs[0].tolist() == [[0, 1, 4, 5], [4, 5, 0, 1]]
    assert (pairs[1] == -1).all()
    targets = demo.pair_targets([[{1}, set()], []], 3)
    assert targets[0].tolist() == [[0, 1, 0], [0, 0, 0]] and (targets[1] == -1).all()
    # The masked loss ignores padding rows: equal to the mean over the one real pair.
    y = np.array([[[0.0, 1.0], [-1.0, -1.0]]], "float32")
    logits = np.array([[[2.0, -1.0], [50.0, 50.0]]], "float32")
    expected = np.log1p(np.exp(2.0)) + np.log1p(np.exp(1.0))
    assert float(demo.masked_pair_crossentropy(y, logits)) == pytest.approx(expected, rel=1e-5)


def test_reader_takes_duie_json_lines(tmp_path):
    demo = _demo()
    path = tmp_path / "duie.json"
    recs = [
        {
            "text": "周杰伦出生于台湾",
            "spo_list": [{"subject": "周杰伦", "predicate": "出生地", "object": {"@value": "台湾"}}],
        },
        {"text": "无关系", "spo_list": []},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs), encoding="utf-8")
    first, second = demo.read_conll04(str(path))
    assert first.tokens == list("周杰伦出生于台湾") and first.triples == [((0, 2), "出生地", (6, 7))]
    assert second.triples == []
    recs[0]["spo_list"][0]["object"] = {"@value": "香港"}
    path.write_text(json.dumps(recs[0], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        demo.read_conll04(str(path))
