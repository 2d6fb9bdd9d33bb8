"""demos/ner_global_pointer.py never scores a position it did not train on:
sentences longer than the trained length are predicted in overlapping
windows of that length and merged."""

import argparse
import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def demo():
    path = os.path.join(ROOT, "demos", "ner_global_pointer.py")
    spec = importlib.util.spec_from_file_location("ner_global_pointer_demo_positions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sentence(demo, tokens, spans=()):
    return demo.Sentence(list(tokens), sorted(spans), 0)


def _vocab(demo):
    # every marker word twice, so that min_count=2 keeps it in the vocabulary
    train = [_sentence(demo, ["x", "[", "]", "p", "q"], [(3, 3, "PER"), (4, 4, "LOC")])] * 2
    return demo.Vocab(train)


class _FakeSpanModel:
    """GlobalPointer-shaped scores from the words alone: type 0 ("LOC") for
    every `[` ... `]` pair, and a junk type-1 ("PER") span on the first token of
    whatever it is given, i.e. at every window's left edge."""

    def __init__(self, vocab):
        self.open, self.close = vocab.words["["], vocab.words["]"]
        self.lengths = []

    def predict_on_batch(self, x):
        words, chars = x
        assert chars.shape[:2] == words.shape
        b, n = words.shape
        self.lengths.append(n)
        out = np.full((b, 2, n, n), -5.0, "float32")
        for row in range(b):
            for i in range(n):
                for j in range(i, n):
                    if words[row, i] == self.open and words[row, j] == self.close:
                        out[row, 0, i, j] = 3.0
            out[row, 1, 0, 0] = 3.0
        return out


class _FakeTagModel:
    """BIO probabilities from the words alone: B-PER on `p`, O elsewhere, and a
    junk I-LOC on the first token of whatever it is given."""

    def __init__(self, vocab):
        self.vocab, self.p = vocab, vocab.words["p"]
        self.lengths = []

    def predict_on_batch(self, x):
        words, _ = x
        b, n = words.shape
        self.lengths.append(n)
        tags = self.vocab.tags
        out = np.zeros((b, n, len(tags)), "float32")
        out[..., tags.index("O")] = 1.0
        out[words == self.p] = 0.0
        out[..., tags.index("B-PER")][words == self.p] = 1.0
        out[:, 0] = 0.0
        out[:, 0, tags.index("I-LOC")] = 1.0
        return out


OPENS, CLOSES = (3, 20, 40, 70, 100, 110), (10, 30, 50, 60, 90, 127)


def _bracket_sentence(demo):
    tokens = ["x"] * 128
    for i in OPENS:
        tokens[i] = "["
    for j in CLOSES:
        tokens[j] = "]"
    return _sentence(demo, tokens)


def test_window_starts_cover_every_token_and_short_span(demo):
    for size in (1, 2, 5, 16, 32):
        for n in range(1, 3 * size + 4):
            starts = demo.window_starts(n, size)
            assert starts[0] == 0 and starts == sorted(set(starts))
            assert all(0 <= a and a + min(size, n) <= n for a in starts)
            assert starts[-1] + min(size, n) == n  # the last window ends the sentence
            for s in range(n):
                for e in range(s, n):
                    inside = [a for a in starts if a <= s and e < a + size]
                    if e - s + 1 <= size - max(1, size // 2) + 1:  # stride size // 2
                        assert inside, (n, size, s, e)
                    if e - s + 1 > size:
                        assert not inside


def test_spans_of_a_long_sentence_come_from_windows_of_the_trained_length(demo):
    vocab = _vocab(demo)
    assert vocab.types == ["LOC", "PER"]
    model = _FakeSpanModel(vocab)
    found = demo.predict_spans(model, "global", [_bracket_sentence(demo)], vocab, window=32)[0]
    assert model.lengths and max(model.lengths) <= 32
    # windows of 32 at 0, 16, ..., 96: a pair is found iff one window holds it
    windows = range(0, 97, 16)
    pairs = [(i, j) for i in OPENS for j in CLOSES if i <= j]
    expected = {(i, j, "LOC") for i, j in pairs if any(a <= i and j <= a + 31 for a in windows)}
    # the window-edge junk survives only where no window holds the token more
    # centrally: token 0, which only the first window holds
    expected.add((0, 0, "PER"))
    assert found == expected
    assert (20, 50, "LOC") not in found  # 31 tokens, but in no window of 32
    assert (40, 60, "LOC") in found and (100, 127, "LOC") in found
    assert all(e - s + 1 <= 32 for s, e, _ in found)


def test_bio_tags_of_a_long_sentence_come_from_their_most_central_window(demo):
    vocab = _vocab(demo)
    tokens = ["x"] * 100
    for i in (5, 16, 40, 68, 99):  # 16 and 68 open windows (stride 16, last at 68)
        tokens[i] = "p"
    model = _FakeTagModel(vocab)
    found = demo.predict_spans(model, "bio", [_sentence(demo, tokens)], vocab, window=32)[0]
    assert max(model.lengths) <= 32
    assert found == {(0, 0, "LOC")} | {(i, i, "PER") for i in (5, 16, 40, 68, 99)}


def test_short_sentences_are_scored_whole(demo):
    vocab = _vocab(demo)
    model = _FakeSpanModel(vocab)
    s = _sentence(demo, ["x", "[", "x", "]", "]"])
    assert demo.predict_spans(model, "global", [s], vocab, window=32)[0] == {
        (1, 3, "LOC"),
        (1, 4, "LOC"),
        (0, 0, "PER"),
    }
    assert model.lengths == [16]  # one bucket of 16, the sentence in one piece


def test_max_span_length_reaches_decode_spans(demo):
    vocab = _vocab(demo)
    found = demo.predict_spans(
        _FakeSpanModel(vocab), "global", [_bracket_sentence(demo)], vocab, window=32, max_span_length=11
    )[0]
    assert found == {(3, 10, "LOC"), (20, 30, "LOC"), (40, 50, "LOC"), (0, 0, "PER")}


def test_trained_length(demo):
    train = [_sentence(demo, ["x"] * n) for n in (5, 40, 12)]
    assert demo.trained_length(train, 32) == 32
    assert demo.trained_length(train, 128) == 40
    assert demo.trained_length(train, 0) == 40


def _synthetic(demo, rng, count, length):
    sentences = []
    for _ in range(count):
        tokens = list(rng.choice(["x", "y", "z", "p", "q"], size=length))
        spans = [(i, i, "PER") for i, t in enumerate(tokens) if t == "p"]
        spans += [(i, i, "LOC") for i, t in enumerate(tokens) if t == "q"]
        sentences.append(_sentence(demo, tokens, spans))
    return sentences


@pytest.mark.slow  # ~5 s on TensorFlow and PyTorch, ~30 s on JAX (eager LSTM)
@pytest.mark.parametrize("head", ["global", "bio"])
def test_model_trained_at_32_predicts_128_in_windows(demo, head, monkeypatch):
    """The demo's own training and evaluation (`run_head`), a tiny model
    trained on sentences of 32 tokens, dev and test sentences of 128: no
    input the model sees is longer than 32, and no predicted span either."""
    rng = np.random.default_rng(0)
    train = _synthetic(demo, rng, 16, 32)
    dev, test = _synthetic(demo, rng, 2, 128), _synthetic(demo, rng, 3, 128)
    vocab = demo.Vocab(train)
    seen = []
    build = demo.build_model

    def spying_build(*a, **k):
        model = build(*a, **k)
        predict = model.predict_on_batch

        def spy(x):
            seen.append(np.shape(x[0])[1])
            return predict(x)

        model.predict_on_batch = spy
        return model

    monkeypatch.setattr(demo, "build_model", spying_build)
    args = argparse.Namespace(
        word_dim=4,
        char_dim=4,
        char_filters=4,
        lstm=4,
        head_size=4,
        dropout=0.0,
        lr=1e-3,
        jit=False,
        eager=True,
        max_len=32,
        max_span_length=None,
        batch_size=16,
        workers=0,
        seed=0,
        epochs=1,
        verbose=0,
    )
    result = demo.run_head(head, train, dev, test, vocab, args, False)
    # one batch of dev windows (after the epoch), one of test windows: 2 and
    # 3 sentences of 128 tokens, 7 windows of 32 each
    assert seen == [32, 32]
    spans = result["test_spans"]
    assert len(spans) == 3
    assert all(0 <= s <= e < 128 for found in spans for s, e, _ in found)
    if head == "global":
        # a span is scored inside one window; BIO entities are chains of
        # per-token tags (each from a window) and may be longer
        assert all(e - s + 1 <= 32 for found in spans for s, e, _ in found)
