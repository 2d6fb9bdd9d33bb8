"""Relation extraction with GPLinker (joint entities and relations) on CoNLL04.

Trains a small encoder from scratch (word embedding + character CNN +
BiLSTM, as demos/ner_global_pointer.py: no pretrained weights offline) with
`keras_tricks.layers.GPLinkerHeads` (an entity head for subject and object
spans, a head-link and a tail-link head with one channel per relation) and
`SparseGlobalPointerCrossentropy(tril_mask=False)`, keeps the best epoch on
dev (strict triple F1), and prints strict triple precision, recall and F1 on
the test file (both spans exact and the relation type; entity types are not
part of the triple).

    python demos/re_gplinker.py --train your/conll04/conll04_train.json \\
        --test your/conll04/conll04_dev.json          # dev split 85/15 from train
    python demos/re_gplinker.py --train a.json --dev b.json --test c.json
    python demos/re_gplinker.py --train a.json --test c.json --smoke   # seconds, for tests
    python demos/re_gplinker.py --train a.json --test c.json --pipeline   # the baseline

`--pipeline` trains the baseline a user would build otherwise, on the same
encoder: a GlobalPointer entity head (one type: every subject and object)
and a pair classifier (the hidden states at the four boundaries of an
ordered entity pair, Dense(256, relu), one sigmoid per relation), trained
jointly on gold entities and all their ordered pairs; at test time the pairs
are those of the predicted entities.

Format (SpERT-style CoNLL04, a JSON list): `{"tokens": [...], "tags": [BILOU
entity tags, e.g. "B-Peop", "L-Peop", "U-Loc", "O"], "relations": [{"head",
"tail", "type"}]}`, `head` / `tail` indexing the entities in their order of
appearance in `tags`. Alternatively `{"tokens", "entities": [{"type",
"start", "end" (exclusive)}], "relations": [...]}` (SpERT's own format: SciERC),
or DuIE's JSON lines `{"text", "spo_list": [{"subject", "predicate", "object":
{"@value"}}]}`, read with characters as tokens and each mention at its first
occurrence (a complex object by its `@value`).
A `--dev` or `--test` file you give is used whole; without `--dev`, 15% of
`--train` (a fixed seed) is held out as dev. Relation types are those of
train; a dev/test triple of a type never seen in training still counts as
gold (it can only be missed). Training sentences are cut to `--max-len`
tokens (0: not cut, the default), dropping the triples beyond the cut.

Batches come from a `keras_tricks.data.DataGenerator` subclass (length
buckets padded to multiples of 16 tokens, reshuffled every epoch from the
seed). On 2 CPU cores (TensorFlow) an epoch of the 784 CoNLL04 training
sentences (15% held out as dev) takes 5-8 s, 50 epochs 6-7 minutes.
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
from keras_tricks import metrics as kt_metrics  # noqa: E402
from keras_tricks import spans as kt_spans  # noqa: E402
from keras_tricks.data import DataGenerator  # noqa: E402

BUCKET = 16

# triples: ((s_start, s_end), relation name, (o_start, o_end)), ends inclusive
Sentence = collections.namedtuple("Sentence", "tokens triples")


def bilou_to_spans(tags):
    """BILOU (or BIO) tags -> [(start, end_inclusive, type)] in order."""
    spans, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-")
        if kind is not None and (prefix in ("O", "B", "U") or t != kind):
            spans.append((start, i - 1, kind))
            start, kind = None, None
        if prefix in ("B", "U") or (prefix in ("I", "L") and kind is None):
            start, kind = i, t
        if prefix in ("L", "U"):
            spans.append((start, i, kind))
            start, kind = None, None
    return spans


def read_duie(path):
    """DuIE (one JSON object a line, characters as tokens): triples from the
    mentions' first occurrences; a complex object is read by its `@value`."""
    out = []
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f):
            if not line.strip():
                continue
            rec = json.loads(line)
            spo = [
                (
                    t["subject"],
                    t["predicate"],
                    t["object"]["@value"] if isinstance(t["object"], dict) else t["object"],
                )
                for t in rec.get("spo_list", [])
            ]
            try:
                triples = kt_spans.triples_from_mentions(list(rec["text"]), spo)
            except ValueError as e:
                raise ValueError(f"{path}, line {k + 1}: {e}") from None
            out.append(Sentence(list(rec["text"]), sorted(set(triples))))
    return out


def read_conll04(path):
    """SpERT-style JSON list (CoNLL04, SciERC), or DuIE's JSON lines."""
    with open(path, encoding="utf-8") as f:
        head = f.read(1)
        while head.isspace():
            head = f.read(1)
    if head != "[":
        return read_duie(path)
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    out = []
    for k, rec in enumerate(records):
        if "tags" in rec:
            ents = [(s, e) for s, e, _ in bilou_to_spans(rec["tags"])]
        else:
            ents = [(e["start"], e["end"] - 1) for e in rec["entities"]]
        triples = set()
        for rel in rec.get("relations", []):
            if not (0 <= rel["head"] < len(ents) and 0 <= rel["tail"] < len(ents)):
                raise ValueError(f"{path}: record {k} has a relation on entity {rel} of {len(ents)}")
            triples.add((ents[rel["head"]], rel["type"], ents[rel["tail"]]))
        out.append(Sentence(list(rec["tokens"]), sorted(triples)))
    return out


class Vocab(WordCharVocab):
    def __init__(self, train, min_count=2):
        super().__init__(train, min_count)
        self.relations = sorted({r for s in train for _, r, _ in s.triples})


class ReBatches(DataGenerator):
    """((words, chars), GPLinker sparse labels) length buckets; `labels=False`
    yields inputs only."""

    def __init__(self, sentences, vocab, batch_size, labels=True, max_len=0, pipeline=False, **kwargs):
        self.pipeline = pipeline
        order = np.argsort([len(s.tokens) for s in sentences], kind="stable")
        self.indices = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        super().__init__([[sentences[i] for i in idx] for idx in self.indices], batch_size=1, **kwargs)
        self.vocab, self.labels, self.max_len = vocab, labels, max_len
        # One row count for every batch: a fixed label shape for fit().
        self.max_rows = max(
            [
                kt_spans.triples_to_sparse_labels([self._kept(s, 0)], vocab.relations).shape[2]
                for s in sentences
            ]
            + [1]
        )

    def _kept(self, s, cut):
        cut = cut or len(s.tokens)
        return [t for t in s.triples if t[1] in self.vocab.relations and max(t[0][1], t[2][1]) < cut]

    def __iter__(self, random=False):
        for _, bucket in self.sample(random):
            yield self.encode(bucket)

    def encode(self, batch):
        cut, x = padded_inputs(self.vocab, batch, self.max_len, BUCKET)
        if self.pipeline:
            return self._pipeline_batch(batch, x, cut)
        if not self.labels:
            return (x,)
        y = kt_spans.triples_to_sparse_labels(
            [self._kept(s, cut) for s in batch],
            self.vocab.relations,
            lengths=[min(len(s.tokens), cut) for s in batch],
            max_rows=self.max_rows,
        )
        return x, y

    def _pipeline_batch(self, batch, x, cut):
        """Pipeline baseline: ((words, chars, pairs), (entity labels, pair
        labels)). Training pairs are every ordered pair of distinct gold
        entities (subjects and objects alike), labelled with their relations."""
        entities, pairs, targets = [], [], []
        for s in batch:
            triples = self._kept(s, cut)
            ents = sorted({t[0] for t in triples} | {t[2] for t in triples})
            entities.append(ents)
            pairs.append([(a, b) for a in ents for b in ents if a != b])
            rel = {}
            for subj, r, obj in triples:
                rel.setdefault((subj, obj), set()).add(self.vocab.relations.index(r))
            targets.append([rel.get(p, set()) for p in pairs[-1]])
        y_ent = kt_spans.spans_to_sparse_labels(
            [[(0, a, b) for a, b in e] for e in entities], 1, max_spans=2 * self.max_rows
        )
        return (*x, pair_array(pairs)), (y_ent, pair_targets(targets, len(self.vocab.relations)))


def pair_array(pairs):
    """(batch, P, 4) int32 (s_start, s_end, o_start, o_end), rows of -1 as padding."""
    out = np.full((len(pairs), max(1, max(map(len, pairs))), 4), -1, "int32")
    for b, ps in enumerate(pairs):
        for k, ((a, e), (c, d)) in enumerate(ps):
            out[b, k] = (a, e, c, d)
    return out


def pair_targets(targets, num_relations):
    out = np.full((len(targets), max(1, max(map(len, targets))), num_relations), -1.0, "float32")
    for b, ts in enumerate(targets):
        for k, rels in enumerate(ts):
            out[b, k] = 0.0
            out[b, k, list(rels)] = 1.0
    return out


class PairFeatures(keras.layers.Layer):
    """Hidden states at the four boundaries of each (subject, object) pair,
    concatenated: (batch, P, 4 * hidden); padding rows (-1) read position 0
    and are masked out by the loss."""

    def call(self, hidden, pairs):
        idx = keras.ops.maximum(pairs, 0)
        b, p = keras.ops.shape(idx)[0], keras.ops.shape(idx)[1]
        flat = keras.ops.reshape(idx, (b, p * 4, 1))
        picked = keras.ops.take_along_axis(hidden, flat, axis=1)
        return keras.ops.reshape(picked, (b, p, 4 * hidden.shape[-1]))


def masked_pair_crossentropy(y_true, y_pred):
    """Binary cross-entropy per relation over the real pairs (rows of -1 are padding)."""
    valid = keras.ops.cast(y_true[..., :1] >= 0, "float32")
    y = keras.ops.maximum(y_true, 0.0)
    loss = keras.ops.sum(
        keras.losses.binary_crossentropy(y[..., None], y_pred[..., None], from_logits=True) * valid, -1
    )
    return keras.ops.sum(loss) / keras.ops.maximum(keras.ops.sum(valid), 1.0)


def build_pipeline_model(vocab, args):
    """The pipeline baseline on the same encoder: a GlobalPointer entity head
    (one type: every subject and object) and a pair classifier (the hidden
    states at the pair's four boundaries, Dense(256, relu), one sigmoid per
    relation), trained jointly on gold entities."""
    inputs, x = encoder(vocab, args)
    pairs = keras.Input((None, 4), dtype="int32", name="pairs")
    head = kt_layers.EfficientGlobalPointer if args.efficient else kt_layers.GlobalPointer
    entities = head(1, args.head_size, name="entities")(x)
    h = PairFeatures()(x, pairs)
    h = keras.layers.Dense(256, activation="relu")(h)
    relations = keras.layers.Dense(len(vocab.relations), name="relations")(h)
    model = keras.Model([*inputs, pairs], [entities, relations])
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=[kt_losses.SparseGlobalPointerCrossentropy(), masked_pair_crossentropy],
        jit_compile=args.jit,
        run_eagerly=args.eager,
    )
    return model


def predict_pipeline(model, sentences, vocab, batch_size=64):
    """Step 1: entities from the entity head; step 2: every ordered pair of
    them through the pair classifier; a relation is kept at probability > 0.5."""
    data = ReBatches(sentences, vocab, batch_size, labels=False)
    found = [None] * len(sentences)
    for idx, (x,) in zip(data.indices, data):
        dummy = np.full((len(idx), 1, 4), -1, "int32")
        ent_scores = np.asarray(model.predict_on_batch((*x, dummy))[0])
        ents = [[] for _ in idx]
        for b, _, a, e in kt_spans.decode_spans(ent_scores):
            if e < len(sentences[idx[b]].tokens):
                ents[b].append((int(a), int(e)))
        pairs = [[(p, q) for p in es for q in es if p != q] for es in ents]
        logits = np.asarray(model.predict_on_batch((*x, pair_array(pairs)))[1])
        for b, i in enumerate(idx):
            found[i] = {
                (p, vocab.relations[r], q)
                for k, (p, q) in enumerate(pairs[b])
                for r in np.nonzero(logits[b, k] > 0.0)[0]
            }
    return found


def build_model(vocab, args):
    inputs, x = encoder(vocab, args)
    out = kt_layers.GPLinkerHeads(len(vocab.relations), args.head_size, efficient=args.efficient)(x)
    model = keras.Model(inputs, out)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=kt_losses.SparseGlobalPointerCrossentropy(tril_mask=False),
        jit_compile=args.jit,
        run_eagerly=args.eager,
    )
    return model


def predict_triples(model, sentences, vocab, batch_size=64):
    data = ReBatches(sentences, vocab, batch_size, labels=False)
    found = [None] * len(sentences)
    for idx, (x,) in zip(data.indices, data):
        scores = np.asarray(model.predict_on_batch(x))
        for i, triples in zip(idx, kt_spans.decode_triples(scores, relations=vocab.relations)):
            n = len(sentences[i].tokens)
            found[i] = {t for t in triples if max(t[0][1], t[2][1]) < n}
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--train", required=True, help="training file, e.g. your copy of CoNLL04's conll04_train.json"
    )
    ap.add_argument("--dev", help="dev file, used whole (default: 15%% split from --train)")
    ap.add_argument("--test", required=True, help="test file, used whole (e.g. CoNLL04's conll04_dev.json)")
    ap.add_argument("--efficient", action="store_true", help="EfficientGlobalPointer heads")
    ap.add_argument(
        "--pipeline",
        action="store_true",
        help="the baseline instead: an entity head plus a pair classifier on the same encoder",
    )
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--word-dim", type=int, default=100)
    ap.add_argument("--char-dim", type=int, default=30)
    ap.add_argument("--char-filters", type=int, default=50)
    ap.add_argument("--lstm", type=int, default=128)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument(
        "--max-len", type=int, default=0, help="cut training sentences to this many tokens (0: no cut)"
    )
    ap.add_argument("--max-train", type=int, default=0, help="use at most this many training sentences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="batch-encoding worker processes")
    ap.add_argument("--verbose", type=int, choices=[0, 1, 2], default=None)
    ap.add_argument("--jit", action="store_true", help="compile with XLA")
    ap.add_argument("--eager", action="store_true", help="run eagerly")
    ap.add_argument("--smoke", action="store_true", help="tiny run for tests (seconds)")
    args = ap.parse_args(argv)
    if args.smoke:  # new defaults; flags given explicitly still win
        ap.set_defaults(
            epochs=1,
            lstm=8,
            word_dim=8,
            char_dim=8,
            char_filters=8,
            head_size=8,
            workers=0,
            max_train=32,
            eager=True,
        )
        args = ap.parse_args(argv)
    if args.verbose is None:
        args.verbose = 1 if sys.stdout.isatty() else 2

    train = read_conll04(args.train)
    if args.dev:
        dev = read_conll04(args.dev)
    else:
        train, dev = split_dev(train, args.seed)
    test = read_conll04(args.test)
    if args.max_train:
        train = train[: args.max_train]
    vocab = Vocab(train)
    print(
        f"keras_tricks {keras_tricks.__version__}, Keras {keras.__version__}, backend {keras.backend.backend()}"
    )
    print(
        f"data: train {_shown(args.train)}: {len(train)} sentences, {sum(len(s.triples) for s in train)} triples; "
        f"dev {_shown(args.dev) if args.dev else 'split from train'}: {len(dev)}; "
        f"test {_shown(args.test)}: {len(test)} sentences, {sum(len(s.triples) for s in test)} triples; "
        f"{len(vocab.relations)} relations {vocab.relations}",
        flush=True,
    )
    keras.utils.set_random_seed(args.seed)
    model = (build_pipeline_model if args.pipeline else build_model)(vocab, args)
    predict = predict_pipeline if args.pipeline else predict_triples
    data = ReBatches(
        train,
        vocab,
        args.batch_size,
        max_len=args.max_len,
        pipeline=args.pipeline,
        workers=args.workers,
        seed=args.seed,
    )

    def dev_f1(model):
        f1 = kt_metrics.triple_prf([s.triples for s in dev], predict(model, dev, vocab))[2]
        return f1, f1, f"dev triple F1 {f1:.4f}"

    keep = KeepBest(dev_f1, bool(args.verbose))
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
    found = predict(model, test, vocab)
    p, r, f = kt_metrics.triple_prf([s.triples for s in test], found)
    print(f"\nStrict triple micro scores on {_shown(args.test)} (best dev epoch {keep.best_epoch}):")
    print(f"{'model':<28}{'precision':>10}{'recall':>10}{'F1':>10}{'params':>10}{'train s':>10}")
    name = "GPLinker" if not args.pipeline else "pipeline: NER + pairs"
    name += " (Efficient GP)" if args.efficient else " (GlobalPointer)"
    print(f"{name:<28}{p:>10.4f}{r:>10.4f}{f:>10.4f}{model.count_params():>10d}{seconds:>10.1f}")
    return {
        "p": p,
        "r": r,
        "f1": f,
        "params": model.count_params(),
        "seconds": seconds,
        "curve": keep.curve,
        "best_epoch": keep.best_epoch,
    }


if __name__ == "__main__":
    main()
