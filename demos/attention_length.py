"""Attention at lengths never trained on: the log-n scale, entropy normalisation,
and the attention matrices read back with `intermediates`.

    python demos/attention_length.py                  # wikigold, seeds 0,1,2 (a few minutes, 2 CPU cores)
    python demos/attention_length.py --seeds 0 --lengths 32,128,512
    python demos/attention_length.py --train a.conll --test c.conll
    python demos/attention_length.py --smoke          # seconds, for tests

A small tagger, from scratch: word embedding, a width-3 convolution (the
only position information, so the model has no position it could not have
seen), two self-attention blocks, a softmax over BIO tags. It is trained on
windows of `--train-length` tokens (whole sentences packed greedily up to
that length) and evaluated on the test set packed the same way into windows
of each `--lengths` value: every test token is scored at every length, so
only the number of tokens each query can attend to changes. Three ways to
attend:

* `plain`: softmax(q.k / sqrt(d)), as `keras.layers.MultiHeadAttention`;
* `log_n`: trained with `keras_tricks.entropy.log_n_attention_scale`
  (logits times log(n) / log(train length), n = the keys a query attends
  to; Su Jianlin, kexue.fm/archives/8823), exactly `plain` at the train
  length;
* `entropy`: the *plain* model's weights, with each attention row passed
  through `keras_tricks.entropy.entropy_normalize` at prediction time, to the
  mean entropy that layer had on training-length windows (Su Jianlin,
  kexue.fm/archives/8829): a post-hoc fix, no retraining.

The attention rows are read back with `keras_tricks.intermediates.capture`
(the blocks mark them with `intermediates.record`; nothing is recorded
during training or `predict`), and their mean entropy per length is shown
next to the entity F1 (exact span and type, micro over the test set). Mean
and sample standard deviation over `--seeds`; the train/dev/test split is
`demos/ner_global_pointer.py`'s (by document, seed 0). The figure goes to
`--out` (default demos/output/attention_length.png).
"""

import argparse
import logging
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The last batch of each length is smaller: one more trace, and TF's
# retracing warning about it is expected here.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ner_global_pointer as ner  # noqa: E402  (sets up Keras quietly)

keras = ner.keras
from _text_encoder import norm_word  # noqa: E402
from keras import layers as L  # noqa: E402
from keras import ops  # noqa: E402

from keras_tricks import intermediates  # noqa: E402
from keras_tricks.entropy import entropy_normalize, log_n_attention_scale  # noqa: E402

MODES = ("plain", "log_n", "entropy")


@keras.saving.register_keras_serializable(package="keras_tricks_demos")
class AttentionBlock(keras.layers.Layer):
    """Self-attention + feed-forward, post-norm, on `[x, word ids]` (id 0 is
    padding). `log_n_length`: train with the log-n scale at that length;
    `entropy_target`: entropy-normalise every attention row to it (nats)."""

    def __init__(self, width, heads, log_n_length=None, entropy_target=None, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.dropout = width, heads, dropout
        self.log_n_length, self.entropy_target = log_n_length, entropy_target
        self.qkv = L.Dense(3 * width)
        self.proj = L.Dense(width)
        self.ff1 = L.Dense(2 * width, activation="relu")
        self.ff2 = L.Dense(width)
        self.norm1, self.norm2 = L.LayerNormalization(), L.LayerNormalization()
        self.softmax = L.Softmax()
        self.drop = L.Dropout(dropout)

    def build(self, input_shape):
        shape = input_shape[0]
        self.qkv.build(shape)
        self.proj.build(shape)
        self.ff1.build(shape)
        self.ff2.build(shape[:-1] + (2 * self.width,))
        self.norm1.build(shape)
        self.norm2.build(shape)

    def call(self, inputs, training=False):
        x, words = inputs
        b, n = ops.shape(x)[0], ops.shape(x)[1]
        hd = self.width // self.heads
        q, k, v = ops.split(ops.reshape(self.qkv(x), (b, n, 3, self.heads, hd)), 3, axis=2)
        q, k, v = (ops.squeeze(t, 2) for t in (q, k, v))
        logits = ops.einsum("bqhd,bkhd->bhqk", q, k) / float(np.sqrt(hd))
        valid = ops.not_equal(words, 0)
        mask = ops.logical_and(valid[:, None, :, None], valid[:, None, None, :])
        if self.log_n_length:
            logits = log_n_attention_scale(logits, mask, train_length=self.log_n_length)
        attention = self.softmax(logits, mask=mask)
        if self.entropy_target is not None:
            attention = entropy_normalize(attention, self.entropy_target)
        attention = intermediates.record(self, "attention", attention)
        y = ops.reshape(ops.einsum("bhqk,bkhd->bqhd", attention, v), (b, n, self.width))
        x = self.norm1(x + self.drop(self.proj(y), training=training))
        return self.norm2(x + self.drop(self.ff2(self.ff1(x)), training=training))

    def get_config(self):
        config = super().get_config()
        config.update(
            width=self.width,
            heads=self.heads,
            log_n_length=self.log_n_length,
            entropy_target=self.entropy_target,
            dropout=self.dropout,
        )
        return config


def build_model(vocab_size, n_tags, args, log_n_length=None, entropy_targets=(None, None)):
    words = keras.Input((None,), dtype="int32", name="words")
    x = L.Embedding(vocab_size, args.width)(words)
    x = L.Conv1D(args.width, 3, padding="same", activation="relu")(x)
    for i, target in enumerate(entropy_targets):
        x = AttentionBlock(args.width, args.heads, log_n_length, target, name=f"block_{i}")([x, words])
    model = keras.Model(words, L.Dense(n_tags, activation="softmax")(x))
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=-1),
    )
    return model


def pack(sentences, length):
    """Whole sentences packed greedily into windows of at most `length`
    tokens (a longer sentence is cut, its spans past the cut dropped):
    a list of (tokens, spans) with spans re-based to the window."""
    windows, tokens, spans = [], [], []
    for s in sentences:
        toks = s.tokens[:length]
        if tokens and len(tokens) + len(toks) > length:
            windows.append((tokens, spans))
            tokens, spans = [], []
        off = len(tokens)
        spans += [(off + a, off + e, t) for a, e, t in s.spans if e < len(toks)]
        tokens = tokens + list(toks)
    if tokens:
        windows.append((tokens, spans))
    return windows


def encode(windows, vocab, with_tags=True, n=None):
    """Word ids (and tag ids, -1 at padding) padded to `n` (default: the
    longest window; one fixed n per length keeps one compiled function)."""
    n = n or max(len(t) for t, _ in windows)
    x = np.zeros((len(windows), n), "int32")
    y = np.full((len(windows), n), -1, "int32")
    for b, (tokens, spans) in enumerate(windows):
        x[b, : len(tokens)] = [vocab.words.get(norm_word(w), 1) for w in tokens]
        y[b, : len(tokens)] = 0
        for a, e, t in spans:
            if t in vocab.types:
                y[b, a] = vocab.tags.index(f"B-{t}")
                y[b, a + 1 : e + 1] = vocab.tags.index(f"I-{t}")
    return (x, y) if with_tags else x


def row_entropy(attention, words):
    """Mean entropy (nats) of the attention rows of valid queries."""
    p = np.asarray(attention, np.float64)
    h = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)  # (b, heads, q)
    valid = np.broadcast_to((words != 0)[:, None, :], h.shape)
    return float(h[valid].mean())


def evaluate(model, windows, vocab, length, batch_size=16):
    """(entity F1, [mean attention entropy per block]) on windows packed to `length`."""
    gold, pred, ent = [], [], [[], []]
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        x = encode(chunk, vocab, with_tags=False, n=length)
        probs, found = intermediates.capture(model, x)
        probs = np.asarray(probs)
        for j in range(2):
            ent[j].append((row_entropy(found[f"block_{j}/attention"][0], x), int((x != 0).sum())))
        for b, (tokens, spans) in enumerate(chunk):
            tags = [vocab.tags[t] for t in probs[b, : len(tokens)].argmax(-1)]
            pred.append(set(ner.tags_to_spans(tags)))
            gold.append(set(spans))
    weighted = [sum(h * w for h, w in e) / sum(w for _, w in e) for e in ent]
    return ner.prf(gold, pred)[2], weighted


def run_seed(seed, train, test, vocab, args):
    keras.utils.set_random_seed(seed)
    windows = pack(train, args.train_length)
    x, y = encode(windows, vocab)
    results, seconds = {}, {}
    trained = {}
    for mode, log_n in (("plain", None), ("log_n", args.train_length)):
        keras.utils.set_random_seed(seed)
        model = build_model(len(vocab.words) + 2, len(vocab.tags), args, log_n_length=log_n)
        start = time.time()
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, shuffle=True)
        seconds[mode] = time.time() - start
        trained[mode] = model
    # The entropy targets: each block's mean row entropy on training-length windows of train data.
    targets = evaluate(trained["plain"], windows[: 8 * 16], vocab, args.train_length)[1]
    post_hoc = build_model(len(vocab.words) + 2, len(vocab.tags), args, entropy_targets=targets)
    post_hoc.set_weights(trained["plain"].get_weights())
    trained["entropy"] = post_hoc
    for mode in MODES:
        results[mode] = {n: evaluate(trained[mode], pack(test, n), vocab, n) for n in args.lengths}
    return results, seconds, targets


def _ints(text):
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=ner.DEFAULT_DATA, help="CoNLL file (default: the bundled wikigold)")
    ap.add_argument("--test", help="test file, used whole (default: split from --train)")
    ap.add_argument("--train-length", type=int, default=32)
    ap.add_argument("--lengths", type=_ints, default=[32, 64, 128, 256, 512])
    ap.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(HERE, "output"), help="folder for the figure")
    ap.add_argument("--smoke", action="store_true", help="tiny run for tests (seconds)")
    args = ap.parse_args(argv)
    if args.train_length < 2:
        ap.error("--train-length must be at least 2")
    if args.smoke:
        args.epochs, args.width, args.heads, args.seeds, args.lengths = 1, 8, 2, [0], [16, 64]
        args.train_length = 16
    ns = argparse.Namespace(train=args.train, dev=None, test=args.test, seed=0, max_train=0)
    train, _, test, where = ner.load_data(ns)
    if args.smoke:
        train, test = train[:64], test[:24]
    vocab = ner.Vocab(train)
    print(
        f"keras_tricks {ner.keras_tricks.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )
    print(
        f"data: train {ner._shown(args.train)}: {len(train)} sentences, test {where['test']}: "
        f"{len(test)}; trained on windows of {args.train_length} tokens; seeds {args.seeds}",
        flush=True,
    )
    per_seed = []
    for seed in args.seeds:
        results, seconds, targets = run_seed(seed, train, test, vocab, args)
        per_seed.append(results)
        print(
            f"seed {seed}: trained plain {seconds['plain']:.1f} s, log_n {seconds['log_n']:.1f} s; "
            f"entropy targets {targets[0]:.3f}, {targets[1]:.3f} nats; "
            + ", ".join(
                f"F1@{n} " + "/".join(f"{results[m][n][0]:.3f}" for m in MODES) for n in args.lengths
            ),
            flush=True,
        )
    print(
        f"\nTest entity F1 and mean attention entropy (nats, block 0 / block 1), mean ± sd over seeds {args.seeds}:"
    )
    print(f"{'length':>7}" + "".join(f"{m + ' F1':>17}{m + ' H':>14}" for m in MODES))
    table = {}
    for n in args.lengths:
        row = f"{n:>7}"
        for m in MODES:
            f1 = np.array([r[m][n][0] for r in per_seed])
            h = np.array([r[m][n][1] for r in per_seed]).mean(0)
            sd = f1.std(ddof=1) if len(f1) > 1 else 0.0
            table[(m, n)] = (f1.mean(), sd, h)
            row += f"{f1.mean():>10.3f}±{sd:<6.3f}{h[0]:>7.2f}/{h[1]:<6.2f}"
        print(row)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return table
    os.makedirs(args.out, exist_ok=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    for m in MODES:
        a1.errorbar(
            args.lengths,
            [table[(m, n)][0] for n in args.lengths],
            [table[(m, n)][1] for n in args.lengths],
            marker="o",
            label=m,
            capsize=3,
        )
        a2.plot(args.lengths, [table[(m, n)][2][1] for n in args.lengths], marker="o", label=m)
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.axvline(args.train_length, color="grey", lw=0.8, ls=":")
        a.set_xlabel("window length (tokens)")
    a1.set_ylabel("test entity F1"), a2.set_ylabel("attention entropy, block 1 (nats)")
    a1.legend(), fig.tight_layout()
    path = os.path.join(args.out, "attention_length.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"figure: {ner._shown(path)}")
    return table


if __name__ == "__main__":
    main()
