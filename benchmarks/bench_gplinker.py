"""Cost of GPLinker relation extraction against what a user would compare it with.

1. Label memory of one batch: the sparse labels of
   `spans.triples_to_sparse_labels` (int32 rows) against dense 0/1 float32
   labels `(batch, 2 + 2R, n, n)`, for CoNLL04-like sentences (R = 5, a few
   triples each).
2. Train-step time (`train_on_batch`, Adam) of `GPLinkerHeads` (2 + 2R
   channels) against a plain `GlobalPointer` NER head (4 types) on the same
   encoder (Embedding + BiLSTM(128)), same batch: the price of the two link
   heads.
3. Decoding time per sentence (`spans.decode_triples`) against the number of
   candidate entities above the threshold (subjects = objects = k).

    python benchmarks/bench_gplinker.py           # n = 64 and 128
    python benchmarks/bench_gplinker.py --quick   # n = 64, few reps

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

from keras_tricks import layers, losses, spans  # noqa: E402

R, BATCH = 5, 16


def _triples(rng, n, count=3):
    out = []
    for _ in range(BATCH):
        starts = rng.choice(n - 2, size=2 * count, replace=False)
        ents = [(int(a), int(a + rng.integers(0, 2))) for a in starts]
        out.append([(ents[2 * i], int(rng.integers(R)), ents[2 * i + 1]) for i in range(count)])
    return out


def _model(head, vocab=5000):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocab, 100, mask_zero=True)(tokens)
    x = keras.layers.Bidirectional(keras.layers.LSTM(128, return_sequences=True))(x)
    model = keras.Model(tokens, head(x))
    model.compile("adam", losses.SparseGlobalPointerCrossentropy(tril_mask=False))
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    lengths = [64] if args.quick else [64, 128]
    reps = 5 if args.quick else 20
    rng = np.random.default_rng(0)
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}, batch {BATCH}, R = {R}")

    print("\n1. label bytes of one batch (3 triples a sentence)")
    print(f"{'n':>6}{'sparse':>12}{'dense':>14}{'dense/sparse':>14}")
    for n in lengths:
        sparse = spans.triples_to_sparse_labels(_triples(rng, n), R)
        dense_bytes = BATCH * (2 + 2 * R) * n * n * 4
        print(f"{n:>6}{sparse.nbytes:>12}{dense_bytes:>14}{dense_bytes / sparse.nbytes:>14.0f}")

    print("\n2. train step, same encoder: GPLinkerHeads vs a GlobalPointer NER head (4 types)")
    print(f"{'n':>6}{'NER GP ms':>12}{'GPLinker ms':>14}{'ratio':>8}")
    for n in lengths:
        tok = rng.integers(1, 5000, size=(BATCH, n)).astype("int32")
        y_re = spans.triples_to_sparse_labels(_triples(rng, n), R)
        y_ner = np.concatenate([y_re[:, :2]] * 2, axis=1)  # entity rows as a 4-type NER label
        ner = _model(lambda x: layers.GlobalPointer(4, 64)(x))
        re_ = _model(lambda x: layers.GPLinkerHeads(R, 64)(x))
        t_ner = median_time(lambda: ner.train_on_batch(tok, y_ner), reps)
        t_re = median_time(lambda: re_.train_on_batch(tok, y_re), reps)
        print(f"{n:>6}{1e3 * t_ner:>12.1f}{1e3 * t_re:>14.1f}{t_re / t_ner:>8.2f}")

    print("\n3. decode_triples per sentence vs candidate entities k (subjects = objects = k), n = 64")
    print(f"{'k':>6}{'ms / sentence':>16}{'triples':>10}")
    n = 64
    for k in (1, 4, 16, 48):
        s = np.full((BATCH, 2 + 2 * R, n, n), -5.0, "float32")
        for b in range(BATCH):
            starts = rng.choice(n - 1, size=k, replace=False)
            s[b, 0, starts, starts + 1] = 1.0
            s[b, 1, starts, starts] = 1.0
        s[:, 2:] = np.where(rng.random(s[:, 2:].shape) < 0.05, 1.0, -1.0)
        t = median_time(lambda: spans.decode_triples(s), reps)
        found = sum(map(len, spans.decode_triples(s))) / BATCH
        print(f"{k:>6}{1e3 * t / BATCH:>16.3f}{found:>10.1f}")


if __name__ == "__main__":
    main()
