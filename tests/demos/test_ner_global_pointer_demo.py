"""demos/ner_global_pointer.py: readers, which data is used, and end-to-end
smoke runs (TensorFlow only)."""

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys

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
def test_demo_smoke_runs_the_three_heads(tmp_path):
    results = _demo().main(["--smoke", "--out", str(tmp_path), "--thresholds=-1,0"])
    assert (tmp_path / "ner_global_pointer.png").exists()
    assert [r["head"] for r in results] == ["global", "crf", "bio"]
    for r in results:
        assert 0.0 <= r["p"] <= 1.0 and 0.0 <= r["r"] <= 1.0 and 0.0 <= r["f1"] <= 1.0
        assert r["seconds"] > 0
    # the sweep decodes one model's scores: a lower threshold never finds fewer spans
    (t0, dev0, _), (t1, dev1, _) = results[0]["sweep"]
    assert (t0, t1) == (-1.0, 0.0) and dev0[1] >= dev1[1]
    assert results[1]["sweep"] == [] and results[2]["sweep"] == []


def test_demo_heads_flag_and_crf_targets(demo):
    with pytest.raises(SystemExit):
        demo.main(["--heads", "global,hmm"])
    assert demo._heads("crf, bio") == ["crf", "bio"]
    sents = [demo.Sentence(["a", "b", "c"], [(1, 2, "X")], 0), demo.Sentence(["a"], [(0, 0, "Y")], 0)]
    vocab = demo.Vocab(sents, min_count=1)
    (x, y) = demo.NerBatches(sents, vocab, batch_size=2, target="crf").encode(sents)
    # tag ids O=0, B-X=1, I-X=2, B-Y=3 (keras_tricks.spans layout); -1 at padding
    assert y.shape == (2, 16) and y[0, :3].tolist() == [0, 1, 2] and y[1, :1].tolist() == [3]
    assert (y[0, 3:] == -1).all() and (y[1, 1:] == -1).all()
    (_, y_bio) = demo.NerBatches(sents, vocab, batch_size=2, target="bio").encode(sents)
    assert (y_bio[y >= 0] == y[y >= 0]).all() and (y_bio[y < 0] == 0).all()


def test_demo_readers_and_span_conversion(tmp_path):
    demo = _demo()
    # IOB1 (wikigold) and BIO: I- after O or another type starts an entity;
    # B- separates two adjacent entities of one type.
    assert demo.tags_to_spans(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == [
        (0, 1, "PER"),
        (2, 2, "PER"),
        (4, 4, "LOC"),
        (5, 5, "ORG"),
    ]
    assert demo.tags_to_spans(["B-X", "I-X", "O", "B-Y"]) == [(0, 1, "X"), (3, 3, "Y")]
    conll = tmp_path / "a.conll"
    conll.write_text("-DOCSTART- O\n\nJohn B-PER\nlives O\nin O\nParis B-LOC\n\nOk O\n")
    sents = demo.read_any(str(conll))
    assert [s.spans for s in sents] == [[(0, 0, "PER"), (3, 3, "LOC")], []]
    cluener = tmp_path / "c.json"
    cluener.write_text(
        json.dumps(
            {
                "text": "浙商银行叶老桂",
                "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[4, 6]]}},
            },
            ensure_ascii=False,
        )
        + "\n"
    )
    s = demo.read_any(str(cluener))[0]
    assert s.tokens[:2] == ["浙", "商"] and s.spans == [(0, 3, "company"), (4, 6, "name")]
    genia = tmp_path / "g.jsonlines"
    genia.write_text(
        json.dumps(
            {
                "tokens": ["IL-2", "gene", "expression"],
                "entity_mentions": [
                    {"start": 0, "end": 2, "entity_type": "DNA"},
                    {"start": 0, "end": 1, "entity_type": "protein"},
                ],
            }
        )
        + "\n"
    )
    s = demo.read_any(str(genia))[0]
    assert s.spans == [(0, 0, "protein"), (0, 1, "DNA")]
    assert demo.outermost(s.spans) == [(0, 1, "DNA")]
    assert demo.prf([{(0, 1, "A"), (2, 2, "B")}], [{(0, 1, "A"), (3, 3, "B")}]) == (0.5, 0.5, 0.5)


# --------------------------------------------- which data is used (item 21)


def _args(**kw):
    base = dict(train=None, dev=None, test=None, max_train=0, seed=0)
    base.update(kw)
    return argparse.Namespace(**base)


def _write_conll(path, sentences):
    lines = []
    for s in sentences:
        tags = ["O"] * len(s.tokens)
        for start, end, kind in s.spans:
            tags[start] = f"B-{kind}"
            tags[start + 1 : end + 1] = [f"I-{kind}"] * (end - start)
        lines += [f"{t} {g}" for t, g in zip(s.tokens, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _key(s):
    return (tuple(s.tokens), tuple(s.spans))


@pytest.fixture(scope="module")
def demo():
    return _demo()


def test_given_test_file_is_used_whole_under_max_train(demo, tmp_path):
    corpus = demo.read_any(demo.DEFAULT_DATA)
    test_file = _write_conll(tmp_path / "test.conll", corpus[:1343])
    train, dev, test, where = demo.load_data(_args(train=demo.DEFAULT_DATA, test=test_file, max_train=1000))
    assert len(test) == 1343 and [_key(s) for s in test] == [_key(s) for s in corpus[:1343]]
    assert len(train) == 1000
    assert where["test"].endswith("test.conll") and where["dev"] == "split from train"
    # --test alone: the dev set is split from train (15 %), disjoint from it,
    # by document (wikigold has -DOCSTART-), at most max(32, 1000 // 4)
    assert abs(len(dev) - 0.15 * len(corpus)) < 0.03 * len(corpus) and len(dev) <= 250
    assert not {_key(s) for s in dev} & {_key(s) for s in train}


def test_test_alone_splits_dev_from_train(demo, tmp_path):
    corpus = demo.read_any(demo.DEFAULT_DATA)
    train_file = _write_conll(tmp_path / "train.conll", corpus[:600])
    test_file = _write_conll(tmp_path / "test.conll", corpus[600:700])
    train, dev, test, _ = demo.load_data(_args(train=train_file, test=test_file))
    assert len(test) == 100
    # the given train file is cut in two, nothing lost or shared (sentence
    # split: the file has no -DOCSTART-)
    assert sorted(map(_key, train + dev)) == sorted(map(_key, corpus[:600]))
    assert len(dev) == 90 and len(train) == 510


def test_dev_alone_splits_test_from_train_and_both_given_are_whole(demo, tmp_path):
    corpus = demo.read_any(demo.DEFAULT_DATA)
    dev_file = _write_conll(tmp_path / "dev.conll", corpus[:300])
    test_file = _write_conll(tmp_path / "test.conll", corpus[300:700])
    train, dev, test, where = demo.load_data(_args(train=demo.DEFAULT_DATA, dev=dev_file, max_train=64))
    assert len(dev) == 300 and len(train) == 64 and len(test) == 32
    assert where["test"] == "split from train"
    train, dev, test, _ = demo.load_data(
        _args(train=demo.DEFAULT_DATA, dev=dev_file, test=test_file, max_train=64)
    )
    assert (len(train), len(dev), len(test)) == (64, 300, 400)


def test_no_dev_or_test_keeps_the_70_15_15_split(demo):
    corpus = demo.read_any(demo.DEFAULT_DATA)
    train, dev, test, _ = demo.load_data(_args(train=demo.DEFAULT_DATA))
    assert sorted(map(_key, train + dev + test)) == sorted(map(_key, corpus))
    # by document: each part is whole documents, about 70/15/15 of the sentences
    docs = [{s.doc for s in part} for part in (train, dev, test)]
    assert not (docs[0] & docs[1] or docs[0] & docs[2] or docs[1] & docs[2])
    assert abs(len(train) / len(corpus) - 0.70) < 0.03
    assert abs(len(test) / len(corpus) - 0.15) < 0.03
    train, dev, test, _ = demo.load_data(_args(train=demo.DEFAULT_DATA, max_train=100))
    assert (len(train), len(dev), len(test)) == (100, 32, 32)


# ------------------------------------------- one real run, as a user sees it


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="demo test runs on TF only")
def test_demo_run_to_a_file_is_quiet_uses_the_test_file_whole_and_says_it_windows(demo, tmp_path):
    """`--test` alone with `--max-train`, `--out`, output to a file: the given
    test file is used whole, the dev set split from train, the windows are
    announced, the plot is where asked, and the output has no TensorFlow
    log lines, Keras warnings or progress-bar control characters."""
    corpus = demo.read_any(demo.DEFAULT_DATA)
    # 40 long sentences (6 wikigold sentences each) for a model cut at 32 tokens
    joined = []
    for g in range(40):
        tokens, spans = [], []
        for s in corpus[6 * g : 6 * g + 6]:
            spans += [(a + len(tokens), b + len(tokens), t) for a, b, t in s.spans]
            tokens += s.tokens
        joined.append(demo.Sentence(tokens, spans, 0))
    assert min(len(s.tokens) for s in joined) > 32
    test_file = _write_conll(tmp_path / "long.conll", joined)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    out = tmp_path / "plots"
    log = tmp_path / "log.txt"
    with open(log, "wb") as f:
        proc = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "demos", "ner_global_pointer.py"),
                "--smoke",
                "--test",
                test_file,
                "--max-len",
                "32",
                "--max-train",
                "40",
                "--out",
                str(out),
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(tmp_path),
            timeout=600,
        )
    text = log.read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, text
    assert "test long.conll: 40;" in text and "dev split from train: 32;" in text
    m = re.search(
        r"\d+ dev and 40 test sentences are longer and are predicted in "
        r"overlapping windows of (\d+) tokens",
        text,
    )
    assert m and int(m.group(1)) <= 32, text
    assert (out / "ner_global_pointer.png").exists()
    assert re.search(r"^softmax BIO ", text, re.M), text
    noise = [
        line
        for line in text.splitlines()
        if re.match(r"[IWEF]\d{4} ", line)
        or re.search(r"absl|cudart|cuInit|cpu_feature_guard|UserWarning|shuffle=True|Traceback", line)
    ]
    assert not noise, noise
    assert "\r" not in text and "\x1b[" not in text and "\x08" not in text
