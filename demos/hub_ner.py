"""GlobalPointer NER on a keras_hub backbone.

A keras_hub text backbone, the padding mask attached as a Keras mask
(`keras_tricks.hub.masked_sequence`), and a `keras_tricks.layers.GlobalPointer`
head trained by `SparseGlobalPointerCrossentropy`; entity-level micro
precision, recall and F1 on the held-out split.

By default the backbone is a randomly initialised BERT (2 layers, hidden 64,
a word-level vocabulary built from the training data): no weights are
downloaded, and the figures show the plumbing works, not what BERT can do.
With `--preset`, a keras_hub preset found locally (a directory written by
`save_to_preset`, or a Kaggle / Hugging Face handle already in the local
cache) gives the backbone and its tokenizer, each word is split into the
tokenizer's pieces, and an entity spans from its first word's first piece to
its last word's last piece.

Data: wikigold (bundled in demos/data/, CC-BY 4.0), read and split by
document 70/15/15 exactly as demos/ner_global_pointer.py does (its readers
are reused, so `--train` takes the same CoNLL / CLUENER / GENIA files).
Sentences are cut to `--max-len` pieces (special tokens included); an
entity beyond the cut is scored as missed.

    python demos/hub_ner.py                          # random BERT, wikigold
    python demos/hub_ner.py --backbone deberta_v3    # random DeBERTa-v3
    python demos/hub_ner.py --preset ~/presets/bert_base_en   # local weights
    python demos/hub_ner.py --smoke                  # seconds, for tests
"""

import argparse
import collections
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import _quiet  # noqa: E402

keras = _quiet.quiet_backend_start()

from ner_global_pointer import DEFAULT_DATA, prf, read_any, split  # noqa: E402

import keras_tricks  # noqa: E402
from keras_tricks import hub  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class WordPieces:
    """Word -> token ids, and the ids of the start, end and padding tokens.

    Without a preset: one id per word (its lower-cased form seen at least
    twice in training, else [UNK]). With one: the preset tokenizer's pieces
    of the word."""

    def __init__(self, train, tokenizer=None, min_count=2):
        self.tokenizer = tokenizer
        if tokenizer is None:
            counts = collections.Counter(w.lower() for s in train for w in s.tokens)
            words = sorted(w for w, c in counts.items() if c >= min_count)
            self.ids = {w: i for i, w in enumerate(SPECIALS + words)}
            self.start, self.end, self.pad = 2, 3, 0
            self.vocabulary_size = len(self.ids)
        else:
            self.start = _token_id(tokenizer, ("cls_token_id", "start_token_id"))
            self.end = _token_id(tokenizer, ("sep_token_id", "end_token_id"))
            self.pad = _token_id(tokenizer, ("pad_token_id",)) or 0
            self.vocabulary_size = tokenizer.vocabulary_size()
        self.cache = {}

    def __call__(self, word):
        if self.tokenizer is None:
            return [self.ids.get(word.lower(), 1)]
        if word not in self.cache:
            ids = self.tokenizer.tokenize(word)
            ids = ids.numpy() if hasattr(ids, "numpy") else keras.ops.convert_to_numpy(ids)
            self.cache[word] = [int(i) for i in np.asarray(ids).reshape(-1)] or [self.pad]
        return self.cache[word]


def _token_id(tokenizer, names):
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


def encode(sentences, pieces, types, max_len):
    """Padded backbone inputs, sparse span labels, and per sentence the
    piece position of each word's first and last piece (-1: cut off)."""
    n = len(sentences)
    token_ids = np.full((n, max_len), pieces.pad, "int32")
    padding = np.zeros((n, max_len), "int32")
    firsts, lasts, spans = [], [], []
    for b, s in enumerate(sentences):
        ids = [] if pieces.start is None else [pieces.start]
        first, last, fits = [], [], True
        for w in s.tokens:
            p = pieces(w)
            # The cut is final: a shorter word after it does not come back.
            fits = fits and len(ids) + len(p) + (pieces.end is not None) <= max_len
            first.append(len(ids) if fits else -1)
            last.append(len(ids) + len(p) - 1 if fits else -1)
            if fits:
                ids += p
        if pieces.end is not None:
            ids.append(pieces.end)
        token_ids[b, : len(ids)] = ids
        padding[b, : len(ids)] = 1
        firsts.append(first)
        lasts.append(last)
        spans.append(
            [(types.index(t), first[a], last[e]) for a, e, t in s.spans if t in types and last[e] >= 0]
        )
    per_type = [collections.Counter(t for t, _, _ in row) for row in spans]
    max_spans = max([max(c.values(), default=0) for c in per_type] + [1])
    labels = keras_tricks.spans.spans_to_sparse_labels(spans, len(types), max_spans=max_spans)
    return {"token_ids": token_ids, "padding_mask": padding}, labels, firsts, lasts


def backbone_inputs(backbone, x):
    batch = dict(x)
    if "segment_ids" in backbone.input:
        batch["segment_ids"] = np.zeros_like(x["token_ids"])
    return {name: batch[name] for name in backbone.input}


def random_backbone(kind, vocabulary_size, max_len, hidden, layers):
    import keras_hub

    common = {
        "vocabulary_size": vocabulary_size,
        "num_layers": layers,
        "hidden_dim": hidden,
        "intermediate_dim": 2 * hidden,
    }
    if kind == "bert":
        return keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=max_len, **common)
    if kind == "roberta":
        return keras_hub.models.RobertaBackbone(num_heads=2, max_sequence_length=max_len, **common)
    return keras_hub.models.DebertaV3Backbone(
        num_heads=2, max_sequence_length=max_len, bucket_size=32, **common
    )


def predicted_entities(model, x, sentences, firsts, lasts, types, batch_size):
    scores = model.predict(x, batch_size=batch_size, verbose=0)
    found = [set() for _ in sentences]
    for b, h, a, e in keras_tricks.spans.decode_spans(scores):
        # Back from pieces to words: a span must start on a word's first
        # piece and end on a word's last piece.
        first, last = firsts[b], lasts[b]
        if a in first and e in last:
            found[b].add((first.index(a), last.index(e), types[h]))
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=DEFAULT_DATA, help="CoNLL / CLUENER / GENIA file (default: wikigold)")
    ap.add_argument("--preset", help="a local keras_hub preset (directory or cached handle)")
    ap.add_argument("--backbone", choices=["bert", "roberta", "deberta_v3"], default="bert")
    ap.add_argument("--layers", type=int, default=2, help="layers of the random backbone")
    ap.add_argument("--hidden", type=int, default=64, help="hidden size of the random backbone")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--head-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=64, help="pieces per sentence, special tokens included")
    ap.add_argument("--max-train", type=int, default=0, help="use at most this many training sentences")
    ap.add_argument("--smoke", action="store_true", help="a few batches, one epoch: seconds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs, args.max_train, args.max_len, args.batch_size = 1, 64, 32, 16
    keras.utils.set_random_seed(args.seed)

    train, dev, test = split(read_any(args.train), seed=args.seed)
    if args.max_train:
        train, test = train[: args.max_train], test[: max(32, args.max_train // 2)]
    types = sorted({t for s in train for _, _, t in s.spans})

    if args.preset:
        import keras_hub

        backbone = keras_hub.models.Backbone.from_preset(args.preset)
        pieces = WordPieces(train, keras_hub.tokenizers.Tokenizer.from_preset(args.preset))
        source = f"preset {args.preset}"
    else:
        pieces = WordPieces(train)
        backbone = random_backbone(
            args.backbone, pieces.vocabulary_size, args.max_len, args.hidden, args.layers
        )
        source = f"random {args.backbone} ({args.layers} layers, hidden {args.hidden})"

    # Only the sequence output is trained on: BERT's pooler would get no gradient.
    for layer in backbone.layers:
        if layer.name == "pooled_dense":
            layer.trainable = False
    inputs = dict(backbone.input)
    seq = hub.masked_sequence(backbone(inputs), inputs["padding_mask"])
    scores = keras_tricks.layers.GlobalPointer(heads=len(types), head_size=args.head_size)(seq)
    model = keras.Model(inputs, scores)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=keras_tricks.losses.SparseGlobalPointerCrossentropy(),
        # A handful of steps run faster eagerly than traced and compiled,
        # except on JAX, whose eager mode compiles every op on its own.
        run_eagerly=args.smoke and keras.backend.backend() != "jax",
    )

    x, y, _, _ = encode(train, pieces, types, args.max_len)
    xt, _, firsts, lasts = encode(test, pieces, types, args.max_len)
    start = time.time()
    model.fit(backbone_inputs(backbone, x), y, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
    seconds = time.time() - start
    found = predicted_entities(
        model, backbone_inputs(backbone, xt), test, firsts, lasts, types, args.batch_size
    )
    gold = [set((a, e, t) for a, e, t in s.spans if t in types) for s in test]
    p, r, f1 = prf(gold, found)
    print(
        f"{source}: {len(train)} training sentences, {len(test)} test sentences, types {types}\n"
        f"test P {p:.3f}  R {r:.3f}  F1 {f1:.3f}  ({args.epochs} epochs, {seconds:.1f} s, "
        f"backend {keras.backend.backend()})"
    )
    return {"source": source, "p": p, "r": r, "f1": f1, "seconds": seconds, "types": types}


if __name__ == "__main__":
    main()
