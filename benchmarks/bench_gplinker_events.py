"""Cost of GPLinker event extraction against what a user would compare it with.

1. Label memory of one batch: the sparse labels of
   `spans.events_to_sparse_labels` (int32 rows) against dense 0/1 float32
   labels `(batch, L + 2, n, n)`, for DuEE-like sentences (L = 282 labels:
   65 event types, their triggers and 217 roles; one event of 4 arguments).
2. Train-step time (`train_on_batch`, Adam) of `GPLinkerEventHeads` (L + 2
   channels) against a plain `GlobalPointer` NER head over the same L labels
   on the same encoder (Embedding + BiLSTM(128)): the price of the two link
   heads.
3. Decoding time per sentence (`spans.decode_events`) against the number k
   of candidate arguments of one event type, for links that are random
   (probability 0.5: many overlapping cliques) and for the worst case of the
   clique search, a complete k/3-partite graph of triples (3^(k/3) maximal
   cliques, Moon and Moser 1965).

    python benchmarks/bench_gplinker_events.py           # n = 64 and 128
    python benchmarks/bench_gplinker_events.py --quick   # n = 64, few reps

Times are medians of repeated calls after warm-up, on whatever backend
`KERAS_BACKEND` selects.
"""

import argparse
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from _timing import median_time  # noqa: E402

from keras_tricks import layers, losses, spans  # noqa: E402

TYPES, ROLES, BATCH = 65, 217, 16
LABELS = [(t, "trigger") for t in range(TYPES)] + [(r % TYPES, f"role{r}") for r in range(ROLES)]


def _events(rng, n, args=4):
    out = []
    for _ in range(BATCH):
        t = int(rng.integers(TYPES))
        roles = [lab for lab in LABELS if lab[0] == t]
        starts = rng.choice(n - 2, size=min(args, len(roles)), replace=False)
        out.append([[(t, roles[k][1], (int(a), int(a + 1))) for k, a in enumerate(starts)]])
    return out


def _model(head, vocab=5000):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocab, 100, mask_zero=True)(tokens)
    x = keras.layers.Bidirectional(keras.layers.LSTM(128, return_sequences=True))(x)
    model = keras.Model(tokens, head(x))
    model.compile("adam", losses.SparseGlobalPointerCrossentropy())
    return model


def _decode_case(k, kind, n=64, seed=0):
    """Scores of one sentence with k candidate arguments of type 0, all at
    distinct starts and ends, and their links."""
    rng = np.random.default_rng(seed)
    labels = [(0, f"r{i}") for i in range(k)]
    s = np.full((1, k + 2, n, n), -5.0, "float32")
    starts = np.sort(rng.choice(n // 2, size=k, replace=False))
    ends = [n - 1 - i for i in range(k)]  # distinct, and after every start
    for i, (a, e) in enumerate(zip(starts, ends)):
        s[0, i, a, e] = 1.0
    for i, j in itertools.combinations(range(k), 2):
        linked = rng.random() < 0.5 if kind == "random" else i // 3 != j // 3
        if linked:
            s[0, k, min(starts[i], starts[j]), max(starts[i], starts[j])] = 1.0
            s[0, k + 1, min(ends[i], ends[j]), max(ends[i], ends[j])] = 1.0
    return s, labels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    lengths = [64] if args.quick else [64, 128]
    reps = 3 if args.quick else 10
    rng = np.random.default_rng(0)
    L = len(LABELS)
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}, batch {BATCH}, L = {L}")

    print("\n1. label bytes of one batch (one event of 4 arguments a sentence)")
    print(f"{'n':>6}{'sparse':>12}{'dense':>14}{'dense/sparse':>14}")
    for n in lengths:
        sparse = spans.events_to_sparse_labels(_events(rng, n), LABELS)
        dense_bytes = BATCH * (L + 2) * n * n * 4
        print(f"{n:>6}{sparse.nbytes:>12}{dense_bytes:>14}{dense_bytes / sparse.nbytes:>14.0f}")

    print(f"\n2. train step, same encoder: GPLinkerEventHeads vs a GlobalPointer NER head ({L} labels)")
    print(f"{'n':>6}{'NER GP ms':>12}{'events ms':>12}{'ratio':>8}")
    for n in lengths:
        tok = rng.integers(1, 5000, size=(BATCH, n)).astype("int32")
        y_ee = spans.events_to_sparse_labels(_events(rng, n), LABELS)
        ner = _model(lambda x: layers.GlobalPointer(L, 64)(x))
        ee = _model(lambda x: layers.GPLinkerEventHeads(L, 64)(x))
        t_ner = median_time(lambda: ner.train_on_batch(tok, y_ee[:, :L]), reps)
        t_ee = median_time(lambda: ee.train_on_batch(tok, y_ee), reps)
        print(f"{n:>6}{1e3 * t_ner:>12.1f}{1e3 * t_ee:>12.1f}{t_ee / t_ner:>8.2f}")

    print("\n3. decode_events per sentence vs candidate arguments k of one type, n = 64")
    print(f"{'k':>6}{'links':>10}{'ms':>10}{'events':>10}")
    for kind, ks in (("random", (4, 8, 16, 24)), ("worst", (6, 12, 18, 24))):
        for k in ks:
            s, labels = _decode_case(k, kind)
            t = median_time(lambda: spans.decode_events(s, labels), reps)
            found = len(spans.decode_events(s, labels)[0])
            print(f"{k:>6}{kind:>10}{1e3 * t:>10.2f}{found:>10}")


if __name__ == "__main__":
    main()
