"""Named entity recognition: GlobalPointer vs CRF vs softmax BIO heads.

Trains the same small encoder (word embedding + character CNN + BiLSTM, from
scratch: no pretrained weights are available offline) once per head:
`keras_tricks.layers.GlobalPointer` (or `EfficientGlobalPointer` with
`--head efficient`) trained by `SparseGlobalPointerCrossentropy`; a
linear-chain CRF over BIO tags (`ConditionalRandomField` + `CRFLoss`,
decoded by Viterbi on the host, spans by `keras_tricks.spans.tags_to_spans`);
a per-token softmax over BIO tags. All are scored by the same entity-level
micro precision, recall and F1 on the held-out split, printed side by side
with each head's training time. `--heads` picks the heads (default
`global,crf,bio`; `global` means the `--head` variant).

Default: wikigold (bundled in demos/data/, CC-BY 4.0), split by document into
train/dev/test 70/15/15 with a fixed seed; the best epoch on dev (entity F1)
is kept. A few minutes on 2 CPU cores (TensorFlow).

    python demos/ner_global_pointer.py                     # wikigold, GP vs CRF vs BIO
    python demos/ner_global_pointer.py --head efficient    # Efficient GlobalPointer
    python demos/ner_global_pointer.py --heads crf         # the CRF head only
    python demos/ner_global_pointer.py --thresholds=-1,-0.5,0,0.5   # GP decoding sweep
    python demos/ner_global_pointer.py --train a.conll --dev b.conll --test c.conll
    python demos/ner_global_pointer.py --train a.conll --test c.conll   # dev split from a
    python demos/ner_global_pointer.py --train your/cluener/train.json  # your copy of CLUENER
    python demos/ner_global_pointer.py --train your/genia/dev.jsonlines # your copy of GENIA
    python demos/ner_global_pointer.py --out /tmp/ner      # where the plot goes
    python demos/ner_global_pointer.py --smoke             # seconds, for tests

Formats (detected from the content): CoNLL (one `token ... tag` line per
token, last column the tag, BIO or IOB1, blank lines between sentences,
`-DOCSTART-` between documents); CLUENER JSON lines (`{"text", "label":
{type: {mention: [[start, end_inclusive]]}}}`, characters as tokens); GENIA
JSON lines (`{"tokens", "entity_mentions": [{"start", "end" (exclusive),
"entity_type"}]}`), which holds nested entities. With nested data the BIO
baseline is trained on the outermost non-overlapping entities (a BIO tagger
cannot represent the rest) and every head is scored against all of them.

Which data is used: a `--dev` or `--test` file that you give is always used
whole; whatever you do not give is split from `--train` by document when
documents are known (train/dev/test 70/15/15 when neither is given,
train/dev or train/test 85/15 when one is). `--max-train N` keeps the first
N training sentences (and caps a dev/test set split from train at
max(32, N // 4) sentences); it never cuts a file you gave.

Positions never trained on: training sentences are cut to `--max-len` tokens
(0: not cut), so the model has seen positions below T = min(--max-len,
longest training sentence) only, and GlobalPointer's rotary scores have seen
start-end distances below T only: on longer sentences they are
extrapolation, and the spans come out as junk. The demo therefore never
scores beyond T: a dev/test sentence longer than T is predicted in
overlapping windows of T tokens (starting at 0, T//2, 2*(T//2), ..., the
last one ending at the sentence's end); each span is taken from the window
in which it is most central (the largest distance to the nearer window edge,
the earlier window on ties) and each BIO or CRF tag likewise (the CRF
Viterbi-decodes each window alone). Every token is in a
window; a span longer than T - T//2 + 1 tokens can be missed in such a
sentence, and one longer than T always is. The demo prints how many dev/test
sentences were windowed. To score long sentences whole, train on them
(`--max-len 0` or a larger `--max-len`). `--max-span-length N` also drops
predicted spans longer than N tokens (`decode_spans(max_span_length=N)`).

Batches come from a `keras_tricks.data.DataGenerator` subclass (length
buckets padded to multiples of 16 tokens, reshuffled every epoch from the
seed, encoded in `--workers` worker processes) fed to `model.fit`. Keras's
progress bar is shown when the output is a terminal, one line per epoch
otherwise (`--verbose`). Dev-set curves go to `--out`
(default demos/output/) as ner_global_pointer.png.
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

from _text_encoder import WordCharVocab, encoder  # noqa: E402
from _text_encoder import shown as _shown  # noqa: E402
from keras import layers as L  # noqa: E402

import keras_tricks  # noqa: E402
from keras_tricks import layers as kt_layers  # noqa: E402
from keras_tricks import losses as kt_losses  # noqa: E402
from keras_tricks import spans as kt_spans  # noqa: E402
from keras_tricks import train as kt_train  # noqa: E402
from keras_tricks.data import DataGenerator  # noqa: E402

DEFAULT_DATA = os.path.join(HERE, "data", "wikigold", "wikigold.conll.txt")
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
                spans = sorted({(m["start"], m["end"] - 1, m["entity_type"]) for m in obj["entity_mentions"]})
                sentences.append(Sentence(obj["tokens"], spans, obj.get("doc_id", 0)))
            elif "text" in obj:  # CLUENER style, characters, end inclusive
                spans = sorted(
                    {
                        (s, e, kind)
                        for kind, mentions in obj.get("label", {}).items()
                        for ranges in mentions.values()
                        for s, e in ranges
                    }
                )
                sentences.append(Sentence(list(obj["text"]), spans, 0))
            else:
                raise ValueError(f"{path}: unknown JSON record keys {sorted(obj)}")
    return sentences


def read_any(path):
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    return read_jsonlines(path) if first.lstrip().startswith("{") else read_conll(path)


def split(sentences, seed=0, bounds=(0.70, 0.85)):
    """Deterministic split, by document when there are several: 70/15/15 by
    default, len(bounds) + 1 parts cut at these cumulative fractions."""
    groups = collections.OrderedDict()
    for i, s in enumerate(sentences):
        groups.setdefault(s.doc, []).append(i)
    keys = list(groups)
    if len(keys) < 10:  # no document structure: split sentences
        keys, groups = list(range(len(sentences))), {i: [i] for i in range(len(sentences))}
    order = np.random.default_rng(seed).permutation(len(keys))
    total, parts, acc = len(sentences), [[] for _ in range(len(bounds) + 1)], 0
    for k in order:
        idx = groups[keys[k]]
        part = next((p for p, b in enumerate(bounds) if acc < b * total), len(bounds))
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


class Vocab(WordCharVocab):
    def __init__(self, train, min_count=2):
        super().__init__(train, min_count)
        self.types = sorted({t for s in train for _, _, t in s.spans})
        self.tags = ["O"] + [f"{p}-{t}" for t in self.types for p in "BI"]


class NerBatches(DataGenerator):
    """((words, chars), labels) batches padded to a multiple of 16 tokens.

    A `keras_tricks.data.DataGenerator` whose samples are length buckets:
    sentences sorted by length and cut into groups of `batch_size`, so one
    sample is one batch with little padding; with `random=True` the order of
    the buckets is reshuffled every epoch from the seed, and `workers=N`
    encodes them in N worker processes (NumPy only, safe under `fork`).
    `target`: "spans" (GlobalPointer span lists padded with -1), "bio" (tag
    ids, 0 at padding), "crf" (tag ids, -1 at padding: `CRFLoss` skips it)
    or None (inputs only)."""

    def __init__(
        self, sentences, vocab, batch_size, target, max_len=None, bio_flatten=False, max_spans=None, **kwargs
    ):
        order = np.argsort([len(s.tokens) for s in sentences], kind="stable")
        self.indices = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        super().__init__([[sentences[i] for i in idx] for idx in self.indices], batch_size=1, **kwargs)
        self.vocab, self.target = vocab, target
        self.max_len = max_len
        self.bio_flatten = bio_flatten
        per_type = [collections.Counter(t for *_, t in s.spans) for s in sentences]
        self.max_spans = max_spans or max([max(c.values(), default=0) for c in per_type] + [1])

    def __iter__(self, random=False):
        for _, bucket in self.sample(random):
            yield self.encode(bucket)

    def encode(self, batch):
        # Cut at max_len exactly (the padding to the bucket stays padding), so
        # that no position >= max_len is ever trained on.
        cut = max(len(s.tokens) for s in batch)
        if self.max_len:
            cut = min(cut, self.max_len)
        n = -(-cut // BUCKET) * BUCKET
        x = self.vocab.encode(batch, n, cut)
        if self.target is None:
            return (x,)
        if self.target == "spans":
            y = np.full((len(batch), len(self.vocab.types), self.max_spans, 2), -1, "int32")
            for b, s in enumerate(batch):
                count = collections.Counter()
                for start, end, t in s.spans:
                    if end < cut and t in self.vocab.types:
                        h = self.vocab.types.index(t)
                        y[b, h, count[h]] = (start, end)
                        count[h] += 1
        else:
            y = np.zeros((len(batch), n), "int32")
            if self.target == "crf":
                y[:] = -1
                for b, s in enumerate(batch):
                    y[b, : min(len(s.tokens), cut)] = 0
            for b, s in enumerate(batch):
                spans = outermost(s.spans) if self.bio_flatten else s.spans
                for start, end, t in spans:
                    if t in self.vocab.types and end < cut:
                        y[b, start] = self.vocab.tags.index(f"B-{t}")
                        y[b, start + 1 : end + 1] = self.vocab.tags.index(f"I-{t}")
        return x, y


# --------------------------------------------------------------------- models


def build_model(vocab, head, args):
    inputs, x = encoder(vocab, args)
    if head == "bio":
        out = L.Dense(len(vocab.tags), activation="softmax")(x)
        loss = "sparse_categorical_crossentropy"
    elif head == "crf":
        # Emissions for O, B-t, I-t (the tag ids of keras_tricks.spans); the
        # layer writes MASK_VALUE at padding (the Keras mask of the word
        # embedding), which is how CRFLoss and the decoders find it.
        crf = kt_layers.ConditionalRandomField(name="crf")
        out = crf(L.Dense(len(vocab.tags))(x))
        loss = kt_losses.CRFLoss(crf)
    else:
        cls = kt_layers.EfficientGlobalPointer if head == "efficient" else kt_layers.GlobalPointer
        out = cls(heads=len(vocab.types), head_size=args.head_size)(x)
        loss = kt_losses.SparseGlobalPointerCrossentropy()
    model = keras.Model(inputs, out)
    tricks = getattr(args, "tricks", None)
    if tricks:
        # demos/ner_tricks.py: train-step tricks (FGM, R-Drop) chained around
        # the same model; the CRF's emissions get R-Drop's token-level KL.
        model = kt_train.TrickModel(model, tricks(head))
    # No XLA: every length bucket would compile its own program.
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=loss,
        jit_compile=args.jit,
        run_eagerly=getattr(args, "eager", False),
    )
    return model


def trained_length(train, max_len):
    """T: training positions are 0 .. T-1 (sentences cut to `max_len`, 0: not cut)."""
    longest = max(len(s.tokens) for s in train)
    return min(longest, max_len) if max_len else longest


def window_starts(n, size):
    """Start offsets of the windows of `size` tokens covering `n` tokens:
    0, size//2, 2*(size//2), ... and a last one ending at token n - 1."""
    if n <= size:
        return [0]
    stride = max(1, size // 2)
    return list(range(0, n - size, stride)) + [n - size]


def central_window(starts, size, start, end):
    """Index of the window holding tokens start..end farthest from its
    edges (the earlier on ties), None if no window holds them all."""
    best, margin = None, -1
    for k, a in enumerate(starts):
        if a <= start and end < a + size and min(start - a, a + size - 1 - end) > margin:
            best, margin = k, min(start - a, a + size - 1 - end)
    return best


def predict_spans(
    model,
    head,
    sentences,
    vocab,
    window=None,
    max_span_length=None,
    batch_size=64,
    threshold=0.0,
    scores=None,
):
    """Predicted `(start, end_inclusive, type)` sets, one per sentence.

    `window`: the trained length T, or None to score every sentence whole.
    A sentence longer than T is cut into the windows of `window_starts`, the
    model scores each window alone (never a position >= T), and each span
    (GlobalPointer) or tag (BIO) comes from its `central_window`.
    `max_span_length` is passed to `decode_spans` (GlobalPointer heads).
    CRF: each window's emissions are Viterbi-decoded on the host
    (`viterbi_decode_numpy` with the layer's transitions), each tag taken
    from its central window, spans by `keras_tricks.spans.tags_to_spans`.
    `threshold`: GlobalPointer's decoding threshold (logit, default 0);
    `scores`: a list that caches the model outputs per batch across calls
    (for threshold sweeps on one model)."""
    pieces, owners, starts = [], [], []
    for i, s in enumerate(sentences):
        n = len(s.tokens)
        size = window or n
        starts.append(window_starts(n, size))
        for k, a in enumerate(starts[-1]):
            pieces.append(Sentence(s.tokens[a : a + size], [], s.doc))
            owners.append((i, k, a))
    data = NerBatches(pieces, vocab, batch_size, target=None)
    found = [set() for _ in sentences]
    tags = [["O"] * len(s.tokens) for s in sentences]
    ids = [np.zeros(len(s.tokens), "int32") for s in sentences]
    if head == "crf":
        crf = getattr(model, "model", model).get_layer("crf")  # also through a TrickModel
        trans = keras.ops.convert_to_numpy(crf.transitions)
    for batch_no, (idx, (x,)) in enumerate(zip(data.indices, data)):  # in order: random=False
        if scores is not None and batch_no < len(scores):
            out = scores[batch_no]  # the outputs of an earlier call (threshold sweeps)
        else:
            out = np.asarray(model.predict_on_batch(x))
            if scores is not None:
                scores.append(out)
        if head == "crf":
            paths = kt_spans.viterbi_decode_numpy(out, trans)
        for row, p in enumerate(idx):
            i, k, a = owners[p]
            n, size = len(pieces[p].tokens), window or len(sentences[i].tokens)
            if head == "bio":
                for j, t in enumerate(out[row, :n].argmax(-1)):
                    if central_window(starts[i], size, a + j, a + j) == k:
                        tags[i][a + j] = vocab.tags[t]
            elif head == "crf":
                for j, t in enumerate(paths[row, :n]):
                    if central_window(starts[i], size, a + j, a + j) == k:
                        ids[i][a + j] = t
            else:
                for _, h, st, e in kt_layers.decode_spans(
                    out[row : row + 1], threshold=threshold, max_span_length=max_span_length
                ):
                    if e < n and central_window(starts[i], size, a + st, a + e) == k:
                        found[i].add((a + int(st), a + int(e), vocab.types[int(h)]))
    if head == "bio":
        found = [set(tags_to_spans(t)) for t in tags]
    elif head == "crf":
        for i, seq in enumerate(ids):
            rows = kt_spans.tags_to_spans(seq[None], num_types=len(vocab.types))
            found[i] = {(int(st), int(e), vocab.types[int(h)]) for _, h, st, e in rows}
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

    def __init__(self, head, dev, vocab, window=None, max_span_length=None):
        super().__init__()
        self.head, self.dev, self.vocab = head, dev, vocab
        self.window, self.max_span_length = window, max_span_length
        self.gold = [set(s.spans) for s in dev]
        self.best, self.best_weights, self.curve = -1.0, None, []
        self.verbose = True

    def on_epoch_end(self, epoch, logs=None):
        found = predict_spans(self.model, self.head, self.dev, self.vocab, self.window, self.max_span_length)
        f1 = prf(self.gold, found)[2]
        self.curve.append(f1)
        if self.verbose:
            print(f"  epoch {epoch + 1}: dev entity F1 {f1:.4f}", flush=True)
        if f1 > self.best:
            self.best, self.best_weights = f1, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def run_head(head, train, dev, test, vocab, args, nested):
    keras.utils.set_random_seed(args.seed)
    model = build_model(vocab, head, args)
    target = head if head in ("bio", "crf") else "spans"
    window = trained_length(train, args.max_len)
    data = NerBatches(
        train,
        vocab,
        args.batch_size,
        target,
        max_len=args.max_len,
        bio_flatten=nested,
        workers=args.workers,
        seed=args.seed,
    )
    keep = KeepBest(head, dev, vocab, window, args.max_span_length)
    keep.verbose = bool(args.verbose)
    # demos/ner_tricks.py's EMA goes first: KeepBest then scores, snapshots
    # and restores the averaged weights.
    callbacks = list(getattr(args, "callbacks", lambda: [])()) + [keep]
    start = time.time()
    with data:  # one worker pool for every epoch, stopped on exit
        # shuffle=False: the generator reshuffles its buckets itself (and Keras
        # would only warn that it ignores shuffle=True for a generator).
        model.fit(
            data.forfit(),
            steps_per_epoch=len(data),
            epochs=args.epochs,
            callbacks=callbacks,
            verbose=args.verbose,
            shuffle=False,
        )
    seconds = time.time() - start
    found = predict_spans(model, head, test, vocab, window, args.max_span_length)
    p, r, f = prf([set(s.spans) for s in test], found)
    sweep = []
    if getattr(args, "thresholds", None) and head in ("global", "efficient"):
        # One trained model, its dev and test scores computed once, decoded
        # at each threshold: no retraining.
        dev_scores, test_scores = [], []
        for t in args.thresholds:
            dev_found = predict_spans(
                model, head, dev, vocab, window, args.max_span_length, threshold=t, scores=dev_scores
            )
            test_found = predict_spans(
                model, head, test, vocab, window, args.max_span_length, threshold=t, scores=test_scores
            )
            sweep.append(
                (
                    t,
                    prf([set(s.spans) for s in dev], dev_found),
                    prf([set(s.spans) for s in test], test_found),
                )
            )
    return {
        "head": head,
        "p": p,
        "r": r,
        "f1": f,
        "seconds": seconds,
        "params": model.count_params(),
        "curve": keep.curve,
        "test_spans": found,
        "sweep": sweep,
    }


def load_data(args):
    """(train, dev, test, where): a --dev / --test file is used whole; what is
    not given is split from --train; --max-train cuts only train and the sets
    split from it."""
    train = read_any(args.train)
    if args.dev and args.test:
        dev, test = read_any(args.dev), read_any(args.test)
    elif args.test:
        test = read_any(args.test)
        train, dev = split(train, args.seed, bounds=(0.85,))
    elif args.dev:
        dev = read_any(args.dev)
        train, test = split(train, args.seed, bounds=(0.85,))
    else:
        train, dev, test = split(train, args.seed)
    if args.max_train:
        train = train[: args.max_train]
        cap = max(32, args.max_train // 4)
        dev = dev if args.dev else dev[:cap]
        test = test if args.test else test[:cap]
    where = {
        "dev": _shown(args.dev) if args.dev else "split from train",
        "test": _shown(args.test) if args.test else "split from train",
    }
    return train, dev, test, where


def _positive_or_none(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


HEADS = ("global", "efficient", "crf", "bio")


def _heads(text):
    heads = [h.strip() for h in text.split(",") if h.strip()]
    bad = [h for h in heads if h not in HEADS]
    if bad or not heads:
        raise argparse.ArgumentTypeError(f"heads must be a comma-separated list from {HEADS}, got {text!r}")
    return heads


def _floats(text):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--train",
        default=DEFAULT_DATA,
        help="CoNLL, CLUENER or GENIA-format file, e.g. your copy of CLUENER's "
        "train.json (default: the bundled wikigold)",
    )
    ap.add_argument("--dev", help="dev file, used whole (default: split from --train)")
    ap.add_argument("--test", help="test file, used whole (default: split from --train)")
    ap.add_argument("--head", choices=["global", "efficient"], default="global")
    ap.add_argument(
        "--heads",
        type=_heads,
        default=None,
        help="comma-separated heads to train, in order, from global, efficient, crf, bio "
        "(default global,crf,bio; 'global' follows --head)",
    )
    ap.add_argument("--no-baseline", action="store_true", help="skip the BIO softmax head")
    ap.add_argument(
        "--thresholds",
        type=_floats,
        default=None,
        help="comma-separated GlobalPointer decoding thresholds (logits): after training, "
        "P/R/F1 on dev and test at each (same model, no retraining)",
    )
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--word-dim", type=int, default=100)
    ap.add_argument("--char-dim", type=int, default=30)
    ap.add_argument("--char-filters", type=int, default=50)
    ap.add_argument("--lstm", type=int, default=100)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument(
        "--max-len",
        type=int,
        default=128,
        help="cut training sentences to this many tokens (0: no cut); longer "
        "dev/test sentences are predicted in windows of the trained length",
    )
    ap.add_argument(
        "--max-span-length",
        type=_positive_or_none,
        default=None,
        help="drop predicted spans longer than this (GlobalPointer heads)",
    )
    ap.add_argument(
        "--max-train",
        type=int,
        default=0,
        help="use at most this many training sentences (a --dev/--test file is still used whole)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="batch-encoding worker processes")
    ap.add_argument(
        "--verbose",
        type=int,
        choices=[0, 1, 2],
        default=None,
        help="progress bar (1), a line per epoch (2), none (0); default 1 on a terminal, else 2",
    )
    ap.add_argument(
        "--out",
        "--output",
        dest="out",
        default=os.path.join(HERE, "output"),
        help="folder for the dev-curve plot (default demos/output)",
    )
    ap.add_argument("--jit", action="store_true", help="compile with XLA")
    ap.add_argument(
        "--eager", action="store_true", help="run eagerly (no graph tracing: faster for a step or two)"
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny run for tests (seconds): 1 epoch, 32 training sentences, "
        "--max-len 16, a tiny model, run eagerly",
    )
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
            max_len=16,
            eager=True,
        )
        args = ap.parse_args(argv)
    if args.verbose is None:
        args.verbose = 1 if sys.stdout.isatty() else 2

    train, dev, test, where = load_data(args)
    nested = any(len(outermost(s.spans)) < len(s.spans) for s in train + dev + test)
    vocab = Vocab(train)
    n_gold = sum(len(s.spans) for s in test)
    bio_ok = sum(len(outermost(s.spans)) for s in test)
    print(
        f"keras_tricks {keras_tricks.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )
    print(
        f"data: train {_shown(args.train)}: {len(train)} sentences; "
        f"dev {where['dev']}: {len(dev)}; test {where['test']}: {len(test)}; "
        f"{len(vocab.types)} types {vocab.types}, "
        f"{n_gold} test entities" + (f" (nested: a BIO tagger can represent {bio_ok})" if nested else "")
    )
    window = trained_length(train, args.max_len)
    long_dev = sum(len(s.tokens) > window for s in dev)
    long_test = sum(len(s.tokens) > window for s in test)
    if long_dev or long_test:
        print(
            f"positions: trained on positions 0..{window - 1}; {long_dev} dev and "
            f"{long_test} test sentences are longer and are predicted in overlapping "
            f"windows of {window} tokens (stride {max(1, window // 2)}), each span or tag "
            f"taken from the window where it is most central"
        )
    else:
        print(
            f"positions: trained on positions 0..{window - 1}; every dev/test sentence fits, none is windowed"
        )
    if args.max_span_length:
        print(f"spans longer than {args.max_span_length} tokens are dropped (--max-span-length)")
    sys.stdout.flush()

    heads = args.heads or ["global", "crf", "bio"]
    heads = [args.head if h == "global" else h for h in heads]
    if args.no_baseline:
        heads = [h for h in heads if h != "bio"]
    results = []
    names = {
        "global": "GlobalPointer",
        "efficient": "EfficientGlobalPointer",
        "crf": "CRF (BIO, Viterbi)",
        "bio": "softmax BIO",
    }
    for head in heads:
        name = names[head]
        print(f"\n== {name} head ==", flush=True)
        results.append(run_head(head, train, dev, test, vocab, args, nested))
        results[-1].update(
            name=name,
            window=window,
            windowed_test=long_test,
            n_train=len(train),
            n_dev=len(dev),
            n_test=len(test),
        )
        r = results[-1]
        print(
            f"  test: P {r['p']:.4f} R {r['r']:.4f} F1 {r['f1']:.4f}, trained {r['seconds']:.1f} s",
            flush=True,
        )

    print("\nEntity-level micro scores on the held-out test split (exact span and type; best dev epoch):")
    print(f"{'head':<24}{'precision':>10}{'recall':>10}{'F1':>10}{'params':>10}{'train s':>10}")
    for r in results:
        print(
            f"{r['name']:<24}{r['p']:>10.4f}{r['r']:>10.4f}{r['f1']:>10.4f}"
            f"{r['params']:>10d}{r['seconds']:>10.1f}"
        )
    for r in results:
        if r["sweep"]:
            print(f"\n{r['name']} decoding threshold sweep (same trained model):")
            print(
                f"{'threshold':>10}{'dev P':>8}{'dev R':>8}{'dev F1':>8}{'test P':>8}{'test R':>8}{'test F1':>8}"
            )
            for t, d, te in r["sweep"]:
                print(f"{t:>10.2f}" + "".join(f"{v:>8.4f}" for v in d + te))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return results
    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for r in results:
        ax.plot(range(1, len(r["curve"]) + 1), r["curve"], marker="o", label=r["name"])
    ax.set_xlabel("epoch"), ax.set_ylabel("dev entity F1"), ax.legend(), fig.tight_layout()
    path = os.path.join(args.out, "ner_global_pointer.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"dev curves: {_shown(path)}")
    return results


if __name__ == "__main__":
    main()
