"""Named entity recognition with a GlobalPointer head vs a softmax BIO head.

Trains the same small encoder (word embedding + character CNN + BiLSTM, from
scratch: no pretrained weights are available offline) twice, once with
`keras_tricks.layers.GlobalPointer` (or `EfficientGlobalPointer` with
`--head efficient`) trained by `SparseGlobalPointerCrossentropy`, once with a
per-token softmax over BIO tags, and prints entity-level micro precision,
recall and F1 on the held-out split side by side.

Default: wikigold (bundled in demos/data/, CC-BY 4.0), split by document into
train/dev/test 70/15/15 with a fixed seed; the best epoch on dev (entity F1)
is kept. Under 10 minutes on 2 CPU cores (TensorFlow).

    python demos/ner_global_pointer.py                     # wikigold, GP vs BIO
    python demos/ner_global_pointer.py --head efficient    # Efficient GlobalPointer
    python demos/ner_global_pointer.py --train a.conll --dev b.conll --test c.conll
    python demos/ner_global_pointer.py --train ../shared/data/ner/cluener2020/train.json
    python demos/ner_global_pointer.py --train ../shared/data/ner/genia/genia_yhcc_dev.jsonlines
    python demos/ner_global_pointer.py --smoke             # a few seconds, for tests

Formats (detected from the content): CoNLL (one `token ... tag` line per
token, last column the tag, BIO or IOB1, blank lines between sentences,
`-DOCSTART-` between documents); CLUENER JSON lines (`{"text", "label":
{type: {mention: [[start, end_inclusive]]}}}`, characters as tokens); GENIA
JSON lines (`{"tokens", "entity_mentions": [{"start", "end" (exclusive),
"entity_type"}]}`), which holds nested entities. With nested data the BIO
baseline is trained on the outermost non-overlapping entities (a BIO tagger
cannot represent the rest) and both heads are scored against all of them.

When only --train is given it is split 70/15/15 (by document when documents
are known). Batches come from a `keras_tricks.data.DataGenerator` subclass
(length buckets padded to multiples of 16 tokens, reshuffled every epoch from
the seed, encoded in `--workers` worker processes) fed to `model.fit`, whose
progress bar is shown. Dev-set curves go to demos/output/ner_global_pointer.png.
"""

import argparse
import collections
import json
import os
import re
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import keras  # noqa: E402
from keras import layers as L  # noqa: E402

import keras_tricks  # noqa: E402
from keras_tricks import layers as kt_layers  # noqa: E402
from keras_tricks import losses as kt_losses  # noqa: E402
from keras_tricks.data import DataGenerator  # noqa: E402

DEFAULT_DATA = os.path.join(HERE, "data", "wikigold", "wikigold.conll.txt")
MAX_CHARS = 16
BUCKET = 16


# ----------------------------------------------------------------------- data

Sentence = collections.namedtuple("Sentence", "tokens spans doc")  # spans: (start, end_incl, type)


def tags_to_spans(tags):
    """BIO or IOB1 tags -> (start, end_inclusive, type). `B-X` always starts an
    entity; `I-X` continues one of type X and otherwise starts one (IOB1)."""
    spans, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-")
        if tag == "O" or prefix == "B" or (prefix == "I" and t != kind):
            if kind is not None:
                spans.append((start, i - 1, kind))
            start, kind = (i, t) if tag != "O" else (None, None)
    return spans


def read_conll(path):
    sentences, tokens, tags, doc = [], [], [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                if tokens:
                    sentences.append(Sentence(tokens, tags_to_spans(tags), doc))
                tokens, tags = [], []
            elif parts[0] == "-DOCSTART-":
                doc += 1
            else:
                tokens.append(parts[0])
                tags.append(parts[-1])
    if tokens:
        sentences.append(Sentence(tokens, tags_to_spans(tags), doc))
    return sentences


def read_jsonlines(path):
    sentences = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if "tokens" in obj:  # GENIA style, end exclusive
                spans = sorted({(m["start"], m["end"] - 1, m["entity_type"])
                                for m in obj["entity_mentions"]})
                sentences.append(Sentence(obj["tokens"], spans, obj.get("doc_id", 0)))
            elif "text" in obj:  # CLUENER style, characters, end inclusive
                spans = sorted({(s, e, kind) for kind, mentions in obj.get("label", {}).items()
                                for ranges in mentions.values() for s, e in ranges})
                sentences.append(Sentence(list(obj["text"]), spans, 0))
            else:
                raise ValueError(f"{path}: unknown JSON record keys {sorted(obj)}")
    return sentences


def read_any(path):
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    return read_jsonlines(path) if first.lstrip().startswith("{") else read_conll(path)


def split(sentences, seed=0):
    """Deterministic 70/15/15 split, by document when there are several."""
    groups = collections.OrderedDict()
    for i, s in enumerate(sentences):
        groups.setdefault(s.doc, []).append(i)
    keys = list(groups)
    if len(keys) < 10:  # no document structure: split sentences
        keys, groups = list(range(len(sentences))), {i: [i] for i in range(len(sentences))}
    order = np.random.default_rng(seed).permutation(len(keys))
    total, parts, acc = len(sentences), ([], [], []), 0
    for k in order:
        idx = groups[keys[k]]
        part = 0 if acc < 0.70 * total else 1 if acc < 0.85 * total else 2
        parts[part].extend(idx)
        acc += len(idx)
    return [[sentences[i] for i in sorted(p)] for p in parts]


def outermost(spans):
    """Greedy non-overlapping subset, longest first: what BIO can encode."""
    kept = []
    for s in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):
        if all(s[1] < k[0] or s[0] > k[1] for k in kept):
            kept.append(s)
    return sorted(kept)


def norm_word(w):
    return re.sub(r"\d", "0", w.lower())


class Vocab:
    def __init__(self, train, min_count=2):
        words = collections.Counter(norm_word(w) for s in train for w in s.tokens)
        chars = collections.Counter(c for s in train for w in s.tokens for c in w)
        self.words = {w: i + 2 for i, w in enumerate(sorted(w for w, c in words.items() if c >= min_count))}
        self.chars = {c: i + 2 for i, c in enumerate(sorted(chars))}
        self.types = sorted({t for s in train for _, _, t in s.spans})
        self.tags = ["O"] + [f"{p}-{t}" for t in self.types for p in "BI"]

    def encode(self, sentences, n):
        words = np.zeros((len(sentences), n), "int32")
        chars = np.zeros((len(sentences), n, MAX_CHARS), "int32")
        for b, s in enumerate(sentences):
            for i, w in enumerate(s.tokens[:n]):
                words[b, i] = self.words.get(norm_word(w), 1)
                ids = [self.chars.get(c, 1) for c in w[:MAX_CHARS]]
                chars[b, i, : len(ids)] = ids
        return words, chars


class NerBatches(DataGenerator):
    """((words, chars), labels) batches padded to a multiple of 16 tokens.

    A `keras_tricks.data.DataGenerator` whose samples are length buckets:
    sentences sorted by length and cut into groups of `batch_size`, so one
    sample is one batch with little padding; with `random=True` the order of
    the buckets is reshuffled every epoch from the seed, and `workers=N`
    encodes them in N worker processes (NumPy only, safe under `fork`).
    `target`: "spans" (GlobalPointer span lists padded with -1), "bio" (tag
    ids) or None (inputs only)."""

    def __init__(self, sentences, vocab, batch_size, target, max_len=None,
                 bio_flatten=False, max_spans=None, **kwargs):
        order = np.argsort([len(s.tokens) for s in sentences], kind="stable")
        self.indices = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        super().__init__([[sentences[i] for i in idx] for idx in self.indices],
                         batch_size=1, **kwargs)
        self.vocab, self.target = vocab, target
        self.max_len = max_len
        self.bio_flatten = bio_flatten
        per_type = [collections.Counter(t for *_, t in s.spans) for s in sentences]
        self.max_spans = max_spans or max([max(c.values(), default=0) for c in per_type] + [1])

    def __iter__(self, random=False):
        for _, bucket in self.sample(random):
            yield self.encode(bucket)

    def encode(self, batch):
        n = max(len(s.tokens) for s in batch)
        if self.max_len:
            n = min(n, self.max_len)
        n = -(-n // BUCKET) * BUCKET
        x = self.vocab.encode(batch, n)
        if self.target is None:
            return (x,)
        if self.target == "spans":
            y = np.full((len(batch), len(self.vocab.types), self.max_spans, 2), -1, "int32")
            for b, s in enumerate(batch):
                count = collections.Counter()
                for start, end, t in s.spans:
                    if end < n and t in self.vocab.types:
                        h = self.vocab.types.index(t)
                        y[b, h, count[h]] = (start, end)
                        count[h] += 1
        else:
            y = np.zeros((len(batch), n), "int32")
            for b, s in enumerate(batch):
                spans = outermost(s.spans) if self.bio_flatten else s.spans
                for start, end, t in spans:
                    if t in self.vocab.types and end < n:
                        y[b, start] = self.vocab.tags.index(f"B-{t}")
                        y[b, start + 1:end + 1] = self.vocab.tags.index(f"I-{t}")
        return x, y


# --------------------------------------------------------------------- models


def build_model(vocab, head, args):
    words = keras.Input((None,), dtype="int32", name="words")
    chars = keras.Input((None, MAX_CHARS), dtype="int32", name="chars")
    w = L.Embedding(len(vocab.words) + 2, args.word_dim, mask_zero=True)(words)
    c = L.Embedding(len(vocab.chars) + 2, args.char_dim)(chars)
    c = L.Conv2D(args.char_filters, (1, 3), padding="same", activation="relu")(c)
    c = L.MaxPooling2D((1, MAX_CHARS))(c)
    c = L.Reshape((-1, args.char_filters))(c)
    x = L.Concatenate()([w, c])
    x = L.Dropout(args.dropout)(x)
    x = L.Bidirectional(L.LSTM(args.lstm, return_sequences=True))(x)
    x = L.Dropout(args.dropout)(x)
    if head == "bio":
        out = L.Dense(len(vocab.tags), activation="softmax")(x)
        loss = "sparse_categorical_crossentropy"
    else:
        cls = kt_layers.EfficientGlobalPointer if head == "efficient" else kt_layers.GlobalPointer
        out = cls(heads=len(vocab.types), head_size=args.head_size)(x)
        loss = kt_losses.SparseGlobalPointerCrossentropy()
    model = keras.Model([words, chars], out)
    # No XLA: every length bucket would compile its own program.
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=loss,
                  jit_compile=args.jit)
    return model


def predict_spans(model, head, sentences, vocab, batch_size=64):
    data = NerBatches(sentences, vocab, batch_size, target=None)
    found = [None] * len(sentences)
    for idx, (x,) in zip(data.indices, data):  # in order: random=False
        out = np.asarray(model.predict_on_batch(x))
        for row, i in enumerate(idx):
            n = len(sentences[i].tokens)
            if head == "bio":
                tags = [vocab.tags[t] for t in out[row, :n].argmax(-1)]
                spans = tags_to_spans(tags)
            else:
                spans = [(int(s), int(e), vocab.types[int(h)])
                         for _, h, s, e in kt_layers.decode_spans(out[row:row + 1])
                         if e < n]
            found[i] = set(spans)
    return found


def prf(gold_sets, pred_sets):
    """Entity-level micro precision, recall, F1 (exact span and type)."""
    tp = sum(len(g & p) for g, p in zip(gold_sets, pred_sets))
    n_pred = sum(len(p) for p in pred_sets)
    n_gold = sum(len(g) for g in gold_sets)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


class KeepBest(keras.callbacks.Callback):
    """Entity F1 on dev after each epoch; restores the best weights at the end."""

    def __init__(self, head, dev, vocab):
        super().__init__()
        self.head, self.dev, self.vocab = head, dev, vocab
        self.gold = [set(s.spans) for s in dev]
        self.best, self.best_weights, self.curve = -1.0, None, []
        self.verbose = True

    def on_epoch_end(self, epoch, logs=None):
        f1 = prf(self.gold, predict_spans(self.model, self.head, self.dev, self.vocab))[2]
        self.curve.append(f1)
        if self.verbose:
            print(f"  dev entity F1 {f1:.4f}")
        if f1 > self.best:
            self.best, self.best_weights = f1, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def run_head(head, train, dev, test, vocab, args, nested):
    keras.utils.set_random_seed(args.seed)
    model = build_model(vocab, head, args)
    target = "bio" if head == "bio" else "spans"
    data = NerBatches(train, vocab, args.batch_size, target, max_len=args.max_len,
                      bio_flatten=nested, workers=args.workers, seed=args.seed)
    keep = KeepBest(head, dev, vocab)
    keep.verbose = bool(args.verbose)
    start = time.time()
    with data:  # one worker pool for every epoch, stopped on exit
        model.fit(data.forfit(), steps_per_epoch=len(data), epochs=args.epochs,
                  callbacks=[keep], verbose=args.verbose)
    seconds = time.time() - start
    p, r, f = prf([set(s.spans) for s in test], predict_spans(model, head, test, vocab))
    return {"head": head, "p": p, "r": r, "f1": f, "seconds": seconds,
            "params": model.count_params(), "curve": keep.curve}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=DEFAULT_DATA)
    ap.add_argument("--dev")
    ap.add_argument("--test")
    ap.add_argument("--head", choices=["global", "efficient"], default="global")
    ap.add_argument("--no-baseline", action="store_true", help="skip the BIO softmax head")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--word-dim", type=int, default=100)
    ap.add_argument("--char-dim", type=int, default=30)
    ap.add_argument("--char-filters", type=int, default=50)
    ap.add_argument("--lstm", type=int, default=100)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--max-len", type=int, default=128, help="truncate training sentences")
    ap.add_argument("--max-train", type=int, default=0, help="use at most this many training sentences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="batch-encoding worker processes")
    ap.add_argument("--verbose", type=int, default=1, help="progress bar (1), a line per epoch (2), none (0)")
    ap.add_argument("--jit", action="store_true", help="compile with XLA")
    ap.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs, args.max_train, args.lstm, args.word_dim = 1, 64, 16, 16
        args.char_filters, args.head_size, args.verbose = 8, 8, 0

    train = read_any(args.train)
    if args.dev and args.test:
        dev, test = read_any(args.dev), read_any(args.test)
    elif args.dev or args.test:
        ap.error("give both --dev and --test, or neither (the train file is then split)")
    else:
        train, dev, test = split(train, args.seed)
    if args.max_train:
        train = train[: args.max_train]
        dev, test = dev[: max(32, args.max_train // 4)], test[: max(32, args.max_train // 4)]
    nested = any(len(outermost(s.spans)) < len(s.spans) for s in train + dev + test)
    vocab = Vocab(train)
    n_gold = sum(len(s.spans) for s in test)
    bio_ok = sum(len(outermost(s.spans)) for s in test)
    print(f"keras_tricks {keras_tricks.__version__}, Keras {keras.__version__}, "
          f"backend {keras.backend.backend()}")
    print(f"data: {os.path.relpath(args.train)}: train {len(train)} / dev {len(dev)} / "
          f"test {len(test)} sentences, {len(vocab.types)} types {vocab.types}, "
          f"{n_gold} test entities" + (f" (nested: a BIO tagger can represent {bio_ok})"
                                       if nested else ""))

    heads = [args.head] + ([] if args.no_baseline else ["bio"])
    results = []
    for head in heads:
        name = {"global": "GlobalPointer", "efficient": "EfficientGlobalPointer",
                "bio": "softmax BIO"}[head]
        print(f"\n== {name} head ==")
        results.append(run_head(head, train, dev, test, vocab, args, nested))
        results[-1]["name"] = name

    print("\nEntity-level micro scores on the held-out test split "
          "(exact span and type; best dev epoch):")
    print(f"{'head':<24}{'precision':>10}{'recall':>10}{'F1':>10}{'params':>10}{'train s':>10}")
    for r in results:
        print(f"{r['name']:<24}{r['p']:>10.4f}{r['r']:>10.4f}{r['f1']:>10.4f}"
              f"{r['params']:>10d}{r['seconds']:>10.1f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(os.path.join(HERE, "output"), exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for r in results:
            ax.plot(range(1, len(r["curve"]) + 1), r["curve"], marker="o", label=r["name"])
        ax.set_xlabel("epoch"), ax.set_ylabel("dev entity F1"), ax.legend(), fig.tight_layout()
        path = os.path.join(HERE, "output", "ner_global_pointer.png")
        fig.savefig(path, dpi=120)
        print(f"dev curves: {os.path.relpath(path)}")
    except ImportError:
        pass
    return results


if __name__ == "__main__":
    main()
