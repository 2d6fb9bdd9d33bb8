"""Span conventions, labels and decoding: the public home of what the span
heads (`layers.GlobalPointer`, `layers.EfficientGlobalPointer`), the span
losses, the span metrics and the decoders share.

- `MASK_VALUE`: the logit of a masked span (-8192.0 in every float type).
- `SPAN_PADDING`, `PADDINGS`: the padding conventions of span-list labels
  (-1, ours; `"bert4keras"`, rows of (0, 0)).
- `valid_span_rows`: which label rows are spans (one definition for the loss
  and the metrics).
- `spans_to_sparse_labels`: entity lists -> `(batch, types, max_spans, 2)`
  labels, on the host.
- `sparse_spans_to_dense`: span lists -> dense `(batch, types, n, n)` labels,
  a backend op (what the sparse loss and metrics do inside).
- `decode_spans`: scores -> `(batch_index, type, start, end)` rows, on the
  host (also importable as `keras_tricks.layers.decode_spans`).
- `viterbi_decode_numpy`, `tags_to_spans`, `spans_to_tags`, `num_tags`,
  `span_rows_to_scores`: CRF tag sequences on the host (BIO / BIOES).
- `triples_to_sparse_labels`, `decode_triples`, `split_gplinker_scores`,
  `triples_from_entity_indices`, `triples_from_mentions`: GPLinker relation
  extraction (labels from triples, triples from scores and from JSON records).
- `events_to_sparse_labels`, `decode_events`, `maximal_cliques`,
  `split_event_scores`, `event_labels_from_schema`, `events_from_duee`,
  `event_prf`: GPLinker event extraction (labels from events, events from
  scores by a maximal-clique search, the article's event/argument scores).
"""

from keras_tricks.spans.conventions import MASK_VALUE, PADDINGS, SPAN_PADDING, check_padding, valid_span_rows
from keras_tricks.spans.decoding import decode_spans
from keras_tricks.spans.events import (
    decode_events,
    event_labels_from_schema,
    event_prf,
    events_from_duee,
    events_to_sparse_labels,
    maximal_cliques,
    split_event_scores,
)
from keras_tricks.spans.labels import spans_to_sparse_labels, sparse_spans_to_dense
from keras_tricks.spans.relations import (
    decode_triples,
    split_gplinker_scores,
    triples_from_entity_indices,
    triples_from_mentions,
    triples_to_sparse_labels,
)
from keras_tricks.spans.tagging import (
    SCHEMES,
    num_tags,
    span_rows_to_scores,
    spans_to_tags,
    tags_to_spans,
    viterbi_decode_numpy,
)

__all__ = [
    "MASK_VALUE",
    "PADDINGS",
    "SCHEMES",
    "SPAN_PADDING",
    "check_padding",
    "decode_spans",
    "decode_events",
    "decode_triples",
    "event_labels_from_schema",
    "event_prf",
    "events_from_duee",
    "events_to_sparse_labels",
    "maximal_cliques",
    "num_tags",
    "span_rows_to_scores",
    "spans_to_sparse_labels",
    "spans_to_tags",
    "sparse_spans_to_dense",
    "split_event_scores",
    "split_gplinker_scores",
    "tags_to_spans",
    "triples_from_entity_indices",
    "triples_from_mentions",
    "triples_to_sparse_labels",
    "valid_span_rows",
    "viterbi_decode_numpy",
]
