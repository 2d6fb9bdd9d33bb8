"""The from-scratch text encoder the span demos share (NER and relation
extraction): word ids plus a character CNN, a BiLSTM over both, the
vocabulary that encodes sentences for it, and the pieces of their training
loops (the dev split, bucket padding, keeping the best epoch). Import it after
`_quiet.quiet_backend_start()` (it imports Keras)."""

import collections
import os
import re

import keras
import numpy as np
from keras import layers as L

MAX_CHARS = 16


def norm_word(w):
    return re.sub(r"\d", "0", w.lower())


def shown(path):
    """A path as the user reads it: relative below here, absolute otherwise."""
    rel = os.path.relpath(path)
    return os.path.abspath(path) if rel.startswith("..") else rel


class WordCharVocab:
    """Word ids (normalised words seen `min_count` times in training; 1 is
    unknown, 0 padding) and character ids of a training set of sentences with
    a `tokens` field."""

    def __init__(self, train, min_count=2):
        words = collections.Counter(norm_word(w) for s in train for w in s.tokens)
        chars = collections.Counter(c for s in train for w in s.tokens for c in w)
        self.words = {w: i + 2 for i, w in enumerate(sorted(w for w, c in words.items() if c >= min_count))}
        self.chars = {c: i + 2 for i, c in enumerate(sorted(chars))}

    def encode(self, sentences, n, limit=None):
        """Word and character ids `(batch, n)`, `(batch, n, MAX_CHARS)` of
        the first `limit` (default n) tokens of each sentence, 0-padded."""
        words = np.zeros((len(sentences), n), "int32")
        chars = np.zeros((len(sentences), n, MAX_CHARS), "int32")
        for b, s in enumerate(sentences):
            for i, w in enumerate(s.tokens[: min(n, limit or n)]):
                words[b, i] = self.words.get(norm_word(w), 1)
                ids = [self.chars.get(c, 1) for c in w[:MAX_CHARS]]
                chars[b, i, : len(ids)] = ids
        return words, chars


def encoder(vocab, args):
    """`([words, chars] inputs, (batch, n, 2 * args.lstm) features)`: word
    embedding (masked) + character CNN, dropout, BiLSTM, dropout."""
    words = keras.Input((None,), dtype="int32", name="words")
    chars = keras.Input((None, MAX_CHARS), dtype="int32", name="chars")
    w = L.Embedding(len(vocab.words) + 2, args.word_dim, mask_zero=True, name="word_embedding")(words)
    c = L.Embedding(len(vocab.chars) + 2, args.char_dim)(chars)
    c = L.Conv2D(args.char_filters, (1, 3), padding="same", activation="relu")(c)
    c = L.MaxPooling2D((1, MAX_CHARS))(c)
    c = L.Reshape((-1, args.char_filters))(c)
    x = L.Concatenate()([w, c])
    x = L.Dropout(args.dropout)(x)
    x = L.Bidirectional(L.LSTM(args.lstm, return_sequences=True))(x)
    x = L.Dropout(args.dropout)(x)
    return [words, chars], x


def split_dev(train, seed, fraction=0.15):
    """(train, dev): `fraction` of `train` (at least one sentence) held out
    as dev, chosen with `seed`."""
    order = np.random.default_rng(seed).permutation(len(train))
    dev_idx = set(order[: max(1, int(round(fraction * len(train))))].tolist())
    return [s for i, s in enumerate(train) if i not in dev_idx], [
        s for i, s in enumerate(train) if i in dev_idx
    ]


def padded_inputs(vocab, batch, max_len, bucket):
    """(cut, (words, chars)): the batch cut at `max_len` tokens (0: not cut)
    and padded to a multiple of `bucket`, so that few batch shapes occur."""
    cut = max(len(s.tokens) for s in batch)
    if max_len:
        cut = min(cut, max_len)
    n = -(-cut // bucket) * bucket
    x = vocab.encode(batch, cut)
    return cut, tuple(np.pad(a, [(0, 0), (0, n - cut)] + [(0, 0)] * (a.ndim - 2)) for a in x)


class KeepBest(keras.callbacks.Callback):
    """`score(model)` -> (value to maximise, curve entry, message) after each
    epoch; keeps the best epoch's weights and restores them at the end."""

    def __init__(self, score, verbose):
        super().__init__()
        self.score, self.verbose = score, verbose
        self.best, self.best_epoch, self.best_weights, self.curve = -1.0, 0, None, []

    def on_epoch_end(self, epoch, logs=None):
        value, entry, message = self.score(self.model)
        self.curve.append(entry)
        if self.verbose:
            print(f"  epoch {epoch + 1}: {message}", flush=True)
        if value > self.best:
            self.best, self.best_epoch, self.best_weights = value, epoch + 1, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
