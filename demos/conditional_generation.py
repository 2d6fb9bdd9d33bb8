"""Conditional text generation with Conditional Layer Normalization.

A small character-level Transformer language model whose every LayerNorm is a
`keras_tricks.layers.ConditionalLayerNormalization` conditioned on a class
embedding (Su Jianlin's recipe: the condition enters only through the gains
and biases of the LayerNorms). By default it learns the entity mentions of the
two CC-BY 4.0 NER corpora shipped in `demos/data/` (wikigold and WNUT17),
conditioned on the entity type, and then writes new names of each type.

    PYTHONPATH=$PWD python demos/conditional_generation.py            # about 2-3 min on 2 CPU cores
    PYTHONPATH=$PWD python demos/conditional_generation.py --smoke    # seconds
    PYTHONPATH=$PWD python demos/conditional_generation.py \\
        --data your/copy/of/waimai_10k.csv                             # your copy of waimai_10k

`--data` takes any CSV file with a header and the columns `label,text`
(the class first, then the text), e.g. the waimai_10k delivery reviews (Chinese,
label 1 = positive, 0 = negative; development only, not shipped).

It reports the validation perplexity per character with the true condition
and with the conditions shuffled among the validation examples: the gap is
what the model draws from the condition. Then it prints a few samples per
class and saves a bar chart to `demos/output/conditional_generation.png`.

Batching: training batches come from a `keras_tricks.data.DataGenerator`
subclass (seeded reshuffle every epoch, `sequence_padding`) through
`fit(gen.forfit(), ...)`; validation uses plain arrays.
"""

import argparse
import collections
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402

_quiet.quiet_backend_start()
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from keras_tricks.data import DataGenerator, sequence_padding  # noqa: E402
from keras_tricks.layers import ConditionalLayerNormalization  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
OUTPUT = HERE / "output"
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]

# WNUT17's six types folded into wikigold's four.
WNUT_TO_CONLL = {
    "person": "PER",
    "location": "LOC",
    "corporation": "ORG",
    "group": "ORG",
    "product": "MISC",
    "creative-work": "MISC",
}


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def _conll_mentions(path, sep=None):
    """(text, type) of every entity mention in a CoNLL file.

    A `B-X` tag, or a tag of another type than the current entity, starts an
    entity: that reads both IOB1 (wikigold: `I-X` also starts an entity, `B-X`
    only separates two adjacent ones of a type) and BIO (WNUT17).
    """
    mentions, tokens, current = [], [], None

    def close():
        nonlocal tokens, current
        if current is not None and tokens:
            mentions.append((" ".join(tokens), current))
        tokens, current = [], None

    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            parts = line.split(sep) if sep else line.split()
            if len(parts) < 2 or parts[0] == "-DOCSTART-":
                close()
                continue
            token, tag = parts[0], parts[-1]
            if tag == "O":
                close()
                continue
            prefix, kind = tag.split("-", 1)
            if prefix == "B" or kind != current:
                close()
                current = kind
            tokens.append(token)
    close()
    return mentions


def load_entity_names():
    mentions = _conll_mentions(DATA / "wikigold" / "wikigold.conll.txt")
    for name in ("wnut17_wnut17train.conll", "wnut17_emerging.dev.conll", "wnut17_emerging.test.annotated"):
        for text, kind in _conll_mentions(DATA / "wnut17" / name, sep="\t"):
            mentions.append((text, WNUT_TO_CONLL[kind]))
    # One copy of each (name, type): the model should learn the shape of the
    # names, not the frequency of "U.S." in news text.
    unique = sorted(set(mentions))
    return [t for t, _ in unique], [k for _, k in unique]


def load_csv(path):
    if not Path(path).is_file():
        raise SystemExit(
            f"--data {path}: no such file (give the path of your copy of "
            "the corpus, a CSV with a header and label,text rows)"
        )
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        if len(header) < 2:
            raise ValueError(f"{path}: expected a header and the columns label,text; got {header}")
        for row in reader:
            if len(row) >= 2 and row[1].strip():
                labels.append(row[0].strip())
                texts.append(row[1].strip())
    return texts, labels


class Vocabulary:
    def __init__(self, texts, max_size):
        counts = collections.Counter(ch for t in texts for ch in t)
        chars = [c for c, n in counts.most_common(max_size - len(SPECIALS)) if n >= 2]
        self.itos = SPECIALS + chars
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, text, max_len, pad=True):
        ids = [BOS] + [self.stoi.get(c, UNK) for c in text][: max_len - 2] + [EOS]
        return ids + [PAD] * (max_len - len(ids)) if pad else ids

    def decode(self, ids):
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.itos[i] if i != UNK else "?")
        return "".join(out)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


class PositionEmbedding(layers.Layer):
    """x + a learned vector per position."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=tuple(input_shape[1:]), initializer="zeros", name="table")

    def call(self, x):
        return x + ops.cast(self.table, x.dtype)


class CharBatches(DataGenerator):
    """Training batches `([chars, class], next chars, weights)` from samples
    `(ids, class)` of unpadded character ids: a `keras_tricks.data.DataGenerator`
    (reshuffled every epoch from the seed) padding with `sequence_padding`.
    Pad targets carry zero weight, so each real character counts once."""

    def __init__(self, samples, max_len, **kwargs):
        super().__init__(samples, **kwargs)
        self.max_len = max_len

    def __iter__(self, random=False):
        ids, labels = [], []
        for is_end, (seq, label) in self.sample(random):
            ids.append(seq)
            labels.append(label)
            if len(ids) == self.batch_size or is_end:
                x = sequence_padding(ids, length=self.max_len, value=PAD, dtype="int32")
                targets = x[:, 1:]
                # A tuple, not a list: TensorFlow's generator adapter takes
                # lists for tensors to stack.
                yield ((x[:, :-1], np.array(labels, "int32")), targets, (targets != PAD).astype("float32"))
                ids, labels = [], []


def build_model(vocab_size, n_classes, max_len, dim, heads, blocks, cond_dim, dropout=0.1, seed=0):
    """Pre-LN causal Transformer; every LayerNorm is conditional on the class."""
    init = keras.initializers.GlorotUniform(seed=seed)
    tokens = keras.Input((max_len,), dtype="int32", name="tokens")
    label = keras.Input((), dtype="int32", name="label")
    cond = layers.Embedding(n_classes, cond_dim, name="class_embedding")(label)  # (batch, c)
    x = layers.Embedding(vocab_size, dim, embeddings_initializer="uniform", name="chars")(tokens)
    x = PositionEmbedding(name="positions")(x)
    for i in range(blocks):
        h = ConditionalLayerNormalization(name=f"cln_attention_{i}")([x, cond])
        h = layers.MultiHeadAttention(
            heads, dim // heads, dropout=dropout, kernel_initializer=init, name=f"attention_{i}"
        )(h, h, use_causal_mask=True)
        x = x + h
        h = ConditionalLayerNormalization(name=f"cln_ffn_{i}")([x, cond])
        h = layers.Dense(4 * dim, activation="gelu", kernel_initializer=init, name=f"ffn_in_{i}")(h)
        h = layers.Dense(dim, kernel_initializer=init, name=f"ffn_out_{i}")(h)
        x = x + layers.Dropout(dropout, seed=seed + i)(h)
    x = ConditionalLayerNormalization(name="cln_final")([x, cond])
    logits = layers.Dense(vocab_size, kernel_initializer=init, name="logits")(x)
    return keras.Model([tokens, label], logits)


def token_log_likelihood(model, ids, labels, batch_size):
    """Sum of log p(next char) over the real (non-pad) targets, and their count."""
    inputs, targets = ids[:, :-1], ids[:, 1:]
    total, count = 0.0, 0
    for start in range(0, len(ids), batch_size):
        logits = model.predict_on_batch(
            [inputs[start : start + batch_size], labels[start : start + batch_size]]
        )
        logits = np.asarray(logits, np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        tgt = targets[start : start + batch_size]
        picked = np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
        real = tgt != PAD
        total += float(picked[real].sum())
        count += int(real.sum())
    return total, count


def perplexity(model, ids, labels, batch_size):
    total, count = token_log_likelihood(model, ids, labels, batch_size)
    return float(np.exp(-total / count))


def generate(model, vocab, label, n, max_len, temperature, rng):
    ids = np.full((n, max_len - 1), PAD, "int32")
    ids[:, 0] = BOS
    labels = np.full((n,), label, "int32")
    done = np.zeros(n, bool)
    for t in range(max_len - 2):
        logits = np.asarray(model.predict_on_batch([ids, labels])[:, t], np.float64)
        logits[:, [PAD, BOS]] = -np.inf
        logits /= temperature
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        nxt = np.array([rng.choice(len(vocab), p=row) for row in p])
        nxt[done] = PAD
        ids[:, t + 1] = nxt
        done |= nxt == EOS
        if done.all():
            break
    return [vocab.decode(row[1:]) for row in ids]


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        help="CSV file with a header and columns label,text "
        "(default: entity mentions of demos/data/ wikigold + WNUT17)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny, fast run (tests)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--cond-dim", type=int, default=16)
    parser.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="characters per text incl. start/end (default 26 names, 40 --data)",
    )
    parser.add_argument("--max-vocab", type=int, default=2000)
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=6, help="samples printed per class")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.dim, args.blocks, args.heads = 1, 32, 1, 2
        args.max_examples, args.samples = 600, 2
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    if args.data:
        texts, labels = load_csv(args.data)
        source = args.data
        max_len = args.max_len or 40
    else:
        texts, labels = load_entity_names()
        source = "wikigold + WNUT17 entity mentions (demos/data/, CC-BY 4.0)"
        max_len = args.max_len or 26
    order = rng.permutation(len(texts))
    if args.max_examples:
        order = order[: args.max_examples]
    texts = [texts[i] for i in order]
    labels = [labels[i] for i in order]
    classes = sorted(set(labels))
    label_ids = np.array([classes.index(l) for l in labels], "int32")

    n_val = max(len(texts) // 10, 1)
    vocab = Vocabulary(texts[n_val:], args.max_vocab)
    ids = np.array([vocab.encode(t, max_len) for t in texts], "int32")
    val_ids, train_ids = ids[:n_val], ids[n_val:]
    val_labels, train_labels = label_ids[:n_val], label_ids[n_val:]
    counts = collections.Counter(labels)
    print(f"data: {source}")
    print(
        f"  {len(texts)} texts ({len(train_ids)} train / {n_val} validation), "
        f"{len(vocab)} symbols, classes: " + ", ".join(f"{c} ({counts[c]})" for c in classes),
        flush=True,
    )

    model = build_model(
        len(vocab),
        len(classes),
        max_len - 1,
        args.dim,
        args.heads,
        args.blocks,
        args.cond_dim,
        seed=args.seed,
    )
    n_cln = sum(isinstance(l, ConditionalLayerNormalization) for l in model.layers)
    print(
        f"model: {args.blocks}-block causal Transformer, dim {args.dim}, "
        f"{n_cln} ConditionalLayerNormalization layers on a {args.cond_dim}-d class "
        f"embedding, {model.count_params():,} parameters",
        flush=True,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    train = CharBatches(
        [
            (vocab.encode(texts[n_val + i], max_len, pad=False), int(train_labels[i]))
            for i in range(len(train_ids))
        ],
        max_len,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    # Pad targets carry zero weight; each real character counts once.
    val_weights = (val_ids[:, 1:] != PAD).astype("float32")
    model.fit(
        train.forfit(),
        steps_per_epoch=len(train),
        validation_data=([val_ids[:, :-1], val_labels], val_ids[:, 1:], val_weights),
        epochs=args.epochs,
        verbose=2,
        shuffle=False,  # the generator reshuffles itself (Keras would warn it ignores shuffle=True)
    )

    # Shuffled: each validation text with the condition of another one.
    shuffled = rng.permutation(val_labels)
    ppl_true = perplexity(model, val_ids, val_labels, 256)
    ppl_shuffled = perplexity(model, val_ids, shuffled, 256)
    per_class = {}
    for k, name in enumerate(classes):
        sel = val_labels == k
        if sel.any():
            others = (
                (k + 1 + rng.integers(0, len(classes) - 1, sel.sum())) % len(classes)
                if len(classes) > 1
                else np.full(sel.sum(), k)
            )
            per_class[name] = (
                perplexity(model, val_ids[sel], val_labels[sel], 256),
                perplexity(model, val_ids[sel], others.astype("int32"), 256),
            )

    print("\nvalidation perplexity per character (lower is better)")
    print(f"  {'condition':34s} {'perplexity':>10s}")
    print(f"  {'true class':34s} {ppl_true:10.3f}")
    print(f"  {'shuffled among examples':34s} {ppl_shuffled:10.3f}")
    print(f"  gap: {100 * (ppl_shuffled / ppl_true - 1):.1f}% higher without the right condition")
    print(f"\n  {'class':16s} {'true':>8s} {'wrong class':>12s}")
    for name, (pt, pw) in per_class.items():
        print(f"  {name:16s} {pt:8.3f} {pw:12.3f}")

    print(f"\nsamples (temperature {args.temperature})")
    for k, name in enumerate(classes):
        samples = generate(model, vocab, k, args.samples, max_len, args.temperature, rng)
        print(f"  {name:8s} " + " | ".join(samples))

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        OUTPUT.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(per_class)
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, [per_class[n][0] for n in names], 0.4, label="true class")
        ax.bar(pos + 0.2, [per_class[n][1] for n in names], 0.4, label="wrong class")
        ax.set_xticks(pos, names)
        ax.set_ylabel("validation perplexity / char")
        ax.set_title("Conditional LayerNorm LM: condition on vs off")
        ax.legend()
        fig.tight_layout()
        path = OUTPUT / "conditional_generation.png"
        fig.savefig(path, dpi=100)
        print(f"\nplot saved to {path}")
    except ImportError:
        print("\n(matplotlib not installed: no plot)")
    print(f"total time {time.perf_counter() - start:.0f} s")
    return {"perplexity_true": ppl_true, "perplexity_shuffled": ppl_shuffled, "per_class": per_class}


if __name__ == "__main__":
    main()
    sys.exit(0)
