"""Event extraction with GPLinker (arguments, links, maximal cliques) on DuEE.

Trains a small encoder from scratch over characters (the embedding + BiLSTM
of demos/ner_global_pointer.py, one character a token: no pretrained weights
offline) with `keras_tricks.layers.GPLinkerEventHeads` (an argument head over
the schema's (event type, role) labels, triggers included, and a head-link
and a tail-link head; EfficientGlobalPointer heads, as the article's code
for events, `--standard` for GlobalPointer) and
`SparseGlobalPointerCrossentropy()`, keeps the best epoch on dev (argument
F1), and prints the article's event-level and argument-level precision,
recall and F1 on the test file, decoded by `keras_tricks.spans.decode_events`
(events without a trigger dropped).

    python demos/ee_gplinker.py --train a.json --test b.json --schema s.json
    python demos/ee_gplinker.py --train a.json --test b.json --smoke   # seconds, for tests

Format (DuEE 1.0, one JSON object a line): `{"text", "event_list": [{
"event_type", "trigger", "trigger_start_index", "arguments": [{"role",
"argument", "argument_start_index"}]}]}`; the schema, one `{"event_type",
"role_list": [{"role"}]}` a line (without `--schema`, the labels seen in
training). The `--test` file is used whole, at its full length; without
`--dev`, 15% of `--train` (a fixed seed) is held out as dev. Training
sentences are cut to `--max-len` characters (arguments beyond the cut are
dropped, and events whose trigger is).

Scores (Su 2022, https://kexue.fm/archives/8926): an event is correct when
its whole argument set, trigger included, equals a gold event of the
sentence; arguments are `(event type, role, span)` without the triggers.
"""

import argparse
import collections
import json
import os
import sys
import time

# Before TensorFlow is imported (by Keras): its C++ INFO/WARNING lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

sys.path.insert(0, HERE)
import _quiet  # noqa: E402

keras = _quiet.quiet_backend_start()


from _text_encoder import KeepBest, WordCharVocab, encoder, padded_inputs, split_dev  # noqa: E402
from _text_encoder import shown as _shown  # noqa: E402

import keras_tricks  # noqa: E402
from keras_tricks import layers as kt_layers  # noqa: E402
from keras_tricks import losses as kt_losses  # noqa: E402
from keras_tricks import spans as kt_spans  # noqa: E402
from keras_tricks.data import DataGenerator  # noqa: E402

BUCKET = 16
TRIGGER = "触发词"  # the trigger's role name, as the article's code
# Scores of at most this many floats per prediction batch (128 MiB): test sentences keep their
# full length, and L + 2 channels of n x n scores grow fast with n.
SCORE_BUDGET = 2**25

Sentence = collections.namedtuple("Sentence", "tokens events")


def read_duee(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f):
            if not line.strip():
                continue
            rec = json.loads(line)
            try:
                events = kt_spans.events_from_duee(rec, trigger_role=TRIGGER)
            except ValueError as e:
                raise ValueError(f"{path}, line {k + 1}: {e}") from None
            out.append(Sentence(list(rec["text"]), events))
    return out


def kept(events, labels, cut):
    """The events a model reading `cut` tokens is asked for: arguments with a
    known label ending before the cut, in events whose trigger survives."""
    known = set(labels)
    out = []
    for event in events:
        args = [a for a in event if a[2][1] < cut and (a[0], a[1]) in known]
        if any(a[1] == TRIGGER for a in args):
            out.append(args)
    return out


class Vocab(WordCharVocab):
    def __init__(self, train, schema=None, min_count=2):
        super().__init__(train, min_count)
        if schema:
            self.labels = kt_spans.event_labels_from_schema(schema, trigger_role=TRIGGER)
        else:
            self.labels = sorted({(a[0], a[1]) for s in train for e in s.events for a in e})


class EeBatches(DataGenerator):
    """((words, chars), sparse event labels) length buckets; `labels=False`
    yields inputs only."""

    def __init__(self, sentences, vocab, batch_size, labels=True, max_len=0, **kwargs):
        order = np.argsort([len(s.tokens) for s in sentences], kind="stable")
        self.indices = []
        for i in range(0, len(order), batch_size):
            chunk = order[i : i + batch_size]
            if labels:
                self.indices.append(chunk)
                continue
            # Inputs only (prediction): split the bucket so its scores fit SCORE_BUDGET.
            n = -(-max(len(sentences[j].tokens) for j in chunk) // BUCKET) * BUCKET
            step = max(1, SCORE_BUDGET // ((len(vocab.labels) + 2) * n * n))
            self.indices += [chunk[k : k + step] for k in range(0, len(chunk), step)]
        super().__init__([[sentences[i] for i in idx] for idx in self.indices], batch_size=1, **kwargs)
        self.vocab, self.labels, self.max_len = vocab, labels, max_len
        # One row count for every batch: a fixed label shape for fit().
        self.max_rows = max(
            [
                kt_spans.events_to_sparse_labels(
                    [kept(s.events, vocab.labels, len(s.tokens))], vocab.labels
                ).shape[2]
                for s in sentences
            ]
            + [1]
        )

    def __iter__(self, random=False):
        for _, bucket in self.sample(random):
            yield self.encode(bucket)

    def encode(self, batch):
        cut, x = padded_inputs(self.vocab, batch, self.max_len, BUCKET)
        if not self.labels:
            return (x,)
        y = kt_spans.events_to_sparse_labels(
            [kept(s.events, self.vocab.labels, cut) for s in batch],
            self.vocab.labels,
            lengths=[min(len(s.tokens), cut) for s in batch],
            max_rows=self.max_rows,
        )
        return x, y


def build_model(vocab, args):
    inputs, x = encoder(vocab, args)
    out = kt_layers.GPLinkerEventHeads(len(vocab.labels), args.head_size, efficient=not args.standard)(x)
    model = keras.Model(inputs, out)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=kt_losses.SparseGlobalPointerCrossentropy(),
        jit_compile=args.jit,
        run_eagerly=args.eager,
    )
    return model


def predict_events(model, sentences, vocab, batch_size=32):
    data = EeBatches(sentences, vocab, batch_size, labels=False)
    found = [None] * len(sentences)
    for idx, (x,) in zip(data.indices, data):
        scores = np.asarray(model.predict_on_batch(x))
        for i, events in zip(idx, kt_spans.decode_events(scores, vocab.labels, trigger_role=TRIGGER)):
            n = len(sentences[i].tokens)
            found[i] = [e for e in events if all(a[2][1] < n for a in e)]
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="training file, e.g. part of your copy of duee_train.json")
    ap.add_argument("--dev", help="dev file, used whole (default: 15%% split from --train)")
    ap.add_argument("--test", required=True, help="test file, used whole")
    ap.add_argument("--schema", help="event schema, e.g. your copy of duee_event_schema.json")
    ap.add_argument(
        "--standard",
        action="store_true",
        help="GlobalPointer heads instead of EfficientGlobalPointer (the article's choice for events: "
        "282 labels of n x n scores each cost a full q.k product with GlobalPointer)",
    )
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--word-dim", type=int, default=128, help="character embedding size")
    ap.add_argument("--char-dim", type=int, default=8, help="(the character CNN sees one character)")
    ap.add_argument("--char-filters", type=int, default=8)
    ap.add_argument("--lstm", type=int, default=128)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--max-len", type=int, default=128, help="cut training sentences (0: no cut)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="batch-encoding worker processes")
    ap.add_argument("--verbose", type=int, choices=[0, 1, 2], default=None)
    ap.add_argument("--jit", action="store_true", help="compile with XLA")
    ap.add_argument("--eager", action="store_true", help="run eagerly")
    ap.add_argument("--smoke", action="store_true", help="tiny run for tests (seconds)")
    args = ap.parse_args(argv)
    if args.smoke:  # new defaults; flags given explicitly still win
        ap.set_defaults(epochs=1, lstm=8, word_dim=8, head_size=8, workers=0, eager=True)
        args = ap.parse_args(argv)
    if args.verbose is None:
        args.verbose = 1 if sys.stdout.isatty() else 2

    train = read_duee(args.train)
    train, dev = (train, read_duee(args.dev)) if args.dev else split_dev(train, args.seed)
    test = read_duee(args.test)
    vocab = Vocab(train, args.schema)
    print(
        f"keras_tricks {keras_tricks.__version__}, Keras {keras.__version__}, backend {keras.backend.backend()}"
    )
    count = lambda data: sum(len(s.events) for s in data)  # noqa: E731
    print(
        f"data: train {_shown(args.train)}: {len(train)} sentences, {count(train)} events; "
        f"dev {_shown(args.dev) if args.dev else 'split from train'}: {len(dev)}; "
        f"test {_shown(args.test)}: {len(test)} sentences, {count(test)} events; {len(vocab.labels)} labels",
        flush=True,
    )
    keras.utils.set_random_seed(args.seed)
    model = build_model(vocab, args)
    data = EeBatches(
        train, vocab, args.batch_size, max_len=args.max_len, workers=args.workers, seed=args.seed
    )

    def dev_scores(model):
        scores = kt_spans.event_prf([s.events for s in dev], predict_events(model, dev, vocab), TRIGGER)
        event, argument = scores["event"][2], scores["argument"][2]
        return argument, (event, argument), f"dev event F1 {event:.4f}, argument F1 {argument:.4f}"

    keep = KeepBest(dev_scores, bool(args.verbose))
    start = time.time()
    with data:
        model.fit(
            data.forfit(),
            steps_per_epoch=len(data),
            epochs=args.epochs,
            callbacks=[keep],
            verbose=args.verbose,
            shuffle=False,
        )
    seconds = time.time() - start
    scores = kt_spans.event_prf([s.events for s in test], predict_events(model, test, vocab), TRIGGER)
    print(f"\nScores on {_shown(args.test)} (best dev epoch {keep.best_epoch}), train {seconds:.1f} s:")
    print(f"{'level':<12}{'precision':>10}{'recall':>10}{'F1':>10}")
    for level, (p, r, f) in scores.items():
        print(f"{level:<12}{p:>10.4f}{r:>10.4f}{f:>10.4f}")
    return {"scores": scores, "seconds": seconds, "curve": keep.curve, "best_epoch": keep.best_epoch}


if __name__ == "__main__":
    main()
