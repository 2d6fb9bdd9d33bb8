"""Cost of the linear-chain CRF against what a user would compare it with.

1. Train-step time (`train_on_batch`, Adam) of three NER heads on the same
   encoder, same batch, at sequence lengths 64..512: GlobalPointer (10
   types, head_size 64, `SparseGlobalPointerCrossentropy`), CRF (21 BIO
   tags, `ConditionalRandomField` + `CRFLoss`) and a softmax over the 21
   tags. The encoder is an embedding and two width-3 convolutions (no
   recurrence, like a transformer: the heads' own cost is what differs;
   `--encoder lstm` puts the NER demo's BiLSTM there instead). The
   GlobalPointer article (https://kexue.fm/archives/8373) reports GP
   training 1.22-1.56x faster than CRF on BERT.
2. Viterbi decoding: sentences per second of the in-graph
   `layers.viterbi_decode` (compiled, in a model's `predict_on_batch`) and of
   the host `spans.viterbi_decode_numpy` (NumPy, for serving), batch 32.
3. The CRF loss step (forward algorithm + path score, forward + backward,
   Adam, on emissions -> Dense -> CRF) with `CRFLoss` against two
   references of the same negative log-likelihood: an unfused scan (one
   plain `ops.scan` of the alpha recursion, no padding handling, path
   score by gathers) and a naive per-step Python loop (one op group per
   time step, unrolled by the tracer). Target: `CRFLoss` within 1.3x of the
   unfused scan.

    python benchmarks/bench_crf.py           # lengths 64..512, ~3 min on TF, 2 cores
    python benchmarks/bench_crf.py --quick   # seconds: n = 64 only, few reps

Times are medians of repeated calls after warm-up, on whatever backend
`KERAS_BACKEND` selects.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from _timing import median_time  # noqa: E402
from keras import ops  # noqa: E402


def settled_median_time(fn, reps):
    return median_time(fn, reps, warmup=2)  # a second warm-up call: graphs settle on the first two


from keras_tricks import layers, losses, spans  # noqa: E402

TYPES, BATCH, VOCAB = 10, 16, 5000
TAGS = spans.num_tags(TYPES)  # 21


def _encoder(kind):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 128, mask_zero=kind == "lstm")(tokens)  # Conv1D drops masks
    if kind == "lstm":
        x = keras.layers.Bidirectional(keras.layers.LSTM(100, return_sequences=True))(x)
    else:
        x = keras.layers.Conv1D(256, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv1D(256, 3, padding="same", activation="relu")(x)
    return tokens, x


def _head_model(head, kind):
    tokens, x = _encoder(kind)
    if head == "gp":
        out = layers.GlobalPointer(heads=TYPES, head_size=64)(x)
        loss = losses.SparseGlobalPointerCrossentropy()
    elif head == "crf":
        crf = layers.ConditionalRandomField()
        out = crf(keras.layers.Dense(TAGS)(x))
        loss = losses.CRFLoss(crf)
    else:
        out = keras.layers.Dense(TAGS, activation="softmax")(x)
        loss = "sparse_categorical_crossentropy"
    model = keras.Model(tokens, out)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    return model


def _batch(rng, n):
    tokens = rng.integers(2, VOCAB, size=(BATCH, n)).astype("int32")
    tags = rng.integers(0, TAGS, size=(BATCH, n)).astype("int32")
    spans_ = np.full((BATCH, TYPES, 4, 2), -1, "int32")
    for b in range(BATCH):
        for h in range(TYPES):
            a = int(rng.integers(0, n - 3))
            spans_[b, h, 0] = (a, a + int(rng.integers(0, 3)))
    return tokens, tags, spans_


# ------------------------------------------------- references for section 3


class UnfusedScanNLL(keras.losses.Loss):
    """The same NLL as `CRFLoss` for all-valid rows: log Z by one plain
    `ops.scan` of alpha_t = logsumexp(alpha_{t-1} + A) + e_t, the path score
    by gathers. No padding handling, nothing fused."""

    def __init__(self, crf):
        super().__init__(name="unfused_scan_nll")
        self.crf = crf

    def call(self, y_true, y_pred):
        e = ops.cast(y_pred, "float32")
        a = self.crf.transitions
        tags = ops.cast(y_true, "int32")

        def step(alpha, e_t):
            alpha = ops.logsumexp(alpha[:, :, None] + a[None], axis=1) + e_t
            return alpha, alpha

        e_tm = ops.moveaxis(e, 1, 0)
        alpha, _ = ops.scan(step, e_tm[0], e_tm[1:])
        log_z = ops.logsumexp(alpha, axis=-1)
        emit = ops.sum(ops.take_along_axis(e, tags[:, :, None], axis=2)[:, :, 0], axis=1)
        pairs = tags[:, :-1] * TAGS + tags[:, 1:]
        trans = ops.sum(ops.take(ops.reshape(a, (-1,)), pairs), axis=1)
        return log_z - emit - trans


class NaiveLoopNLL(UnfusedScanNLL):
    """The same NLL by a Python loop over the time steps."""

    def call(self, y_true, y_pred):
        e = ops.cast(y_pred, "float32")
        a = self.crf.transitions
        tags = ops.cast(y_true, "int32")
        onehot = ops.one_hot(tags, TAGS, dtype="float32")
        alpha = e[:, 0]
        score = ops.sum(e[:, 0] * onehot[:, 0], axis=-1)
        for t in range(1, e.shape[1]):
            alpha = ops.logsumexp(alpha[:, :, None] + a[None], axis=1) + e[:, t]
            score = score + ops.sum(e[:, t] * onehot[:, t], axis=-1)
            score = score + ops.sum(ops.matmul(onehot[:, t - 1], a) * onehot[:, t], axis=-1)
        return ops.logsumexp(alpha, axis=-1) - score


def _loss_model(loss_cls, n):
    emissions = keras.Input((n, TAGS))
    crf = layers.ConditionalRandomField()
    out = crf(keras.layers.Dense(TAGS)(emissions))
    model = keras.Model(emissions, out)
    model.compile(keras.optimizers.Adam(1e-3), loss_cls(crf))
    return model


class _Viterbi(keras.layers.Layer):
    def __init__(self, transitions, **kwargs):
        super().__init__(**kwargs)
        self.t = transitions

    def call(self, emissions):
        return layers.viterbi_decode(emissions, self.t)

    def compute_output_spec(self, emissions):
        return keras.KerasTensor(emissions.shape[:2], dtype="int32")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--encoder", choices=["conv", "lstm"], default="conv")
    ap.add_argument("--lengths", default=None, help="comma-separated (default 64,128,256,512)")
    args = ap.parse_args(argv)
    lengths = [64] if args.quick else [64, 128, 256, 512]
    if args.lengths:
        lengths = [int(v) for v in args.lengths.split(",")]
    reps = 2 if args.quick else 5
    rng = np.random.default_rng(0)
    print(
        f"Keras {keras.__version__}, backend {keras.backend.backend()}, batch {BATCH}, "
        f"{TYPES} types / {TAGS} BIO tags, encoder {args.encoder}, median of {reps}"
    )

    print("\n1. train step (ms), same encoder and batch")
    print(f"{'n':>6}{'GP':>10}{'CRF':>10}{'softmax':>10}{'CRF/GP':>9}{'CRF/softmax':>13}")
    models = {h: _head_model(h, args.encoder) for h in ("gp", "crf", "softmax")}
    for n in lengths:
        tokens, tags, spans_ = _batch(rng, n)
        ms = {}
        for h, model in models.items():
            y = spans_ if h == "gp" else tags
            ms[h] = 1e3 * settled_median_time(lambda m=model, y=y: m.train_on_batch(tokens, y), reps)
        print(
            f"{n:>6}{ms['gp']:>10.1f}{ms['crf']:>10.1f}{ms['softmax']:>10.1f}"
            f"{ms['crf'] / ms['gp']:>9.2f}{ms['crf'] / ms['softmax']:>13.2f}"
        )

    print("\n2. Viterbi decoding, batch 32 (sentences / s)")
    print(f"{'n':>6}{'in-graph':>12}{'host NumPy':>12}{'host/in-graph':>15}")
    trans = rng.normal(size=(TAGS, TAGS)).astype("float32")
    for n in lengths[:2] if not args.quick else lengths:
        e = rng.normal(size=(32, n, TAGS)).astype("float32")
        inp = keras.Input((None, TAGS))
        decoder = keras.Model(inp, _Viterbi(trans)(inp))
        graph = settled_median_time(lambda e=e, d=decoder: d.predict_on_batch(e), reps)
        host = settled_median_time(lambda e=e: spans.viterbi_decode_numpy(e, trans), max(2, reps // 2))
        print(f"{n:>6}{32 / graph:>12.0f}{32 / host:>12.0f}{graph / host:>15.2f}")

    print("\n3. CRF loss step (ms): emissions -> Dense -> CRF, forward + backward, Adam")
    print(f"{'n':>6}{'CRFLoss':>10}{'unfused':>10}{'naive loop':>12}{'ours/unfused':>14}{'ours/naive':>12}")
    for n in [m for m in lengths if m <= 256]:
        x = rng.normal(size=(BATCH, n, TAGS)).astype("float32")
        tags = rng.integers(0, TAGS, size=(BATCH, n)).astype("int32")
        ms = {}
        for key, cls in (("ours", losses.CRFLoss), ("unfused", UnfusedScanNLL), ("naive", NaiveLoopNLL)):
            model = _loss_model(cls, n)
            ms[key] = 1e3 * settled_median_time(lambda m=model: m.train_on_batch(x, tags), reps)
        print(
            f"{n:>6}{ms['ours']:>10.1f}{ms['unfused']:>10.1f}{ms['naive']:>12.1f}"
            f"{ms['ours'] / ms['unfused']:>14.2f}{ms['ours'] / ms['naive']:>12.2f}"
        )


if __name__ == "__main__":
    main()
