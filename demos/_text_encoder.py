"""The from-scratch text encoder the span demos share (NER and relation
extraction): word ids plus a character CNN, a BiLSTM over both, and the
vocabulary that encodes sentences for it. Import it after
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
    w = L.Embedding(len(vocab.words) + 2, args.word_dim, mask_zero=True)(words)
    c = L.Embedding(len(vocab.chars) + 2, args.char_dim)(chars)
    c = L.Conv2D(args.char_filters, (1, 3), padding="same", activation="relu")(c)
    c = L.MaxPooling2D((1, MAX_CHARS))(c)
    c = L.Reshape((-1, args.char_filters))(c)
    x = L.Concatenate()([w, c])
    x = L.Dropout(args.dropout)(x)
    x = L.Bidirectional(L.LSTM(args.lstm, return_sequences=True))(x)
    x = L.Dropout(args.dropout)(x)
    return [words, chars], x
