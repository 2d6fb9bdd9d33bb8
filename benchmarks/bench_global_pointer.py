"""Cost of the GlobalPointer heads and losses against what a user would
otherwise write.

1. Forward + backward time of one training step (`train_on_batch`, SGD) of
   `GlobalPointer` (RoPE + padding mask + tril mask) and
   `EfficientGlobalPointer` against the bare floor: one Dense projection and
   one q.k einsum, no RoPE, no masks, no scaling. seq_len 128 / 256 / 512,
   hidden 768, 10 types, head_size 64. Target: GP <= 1.3x the floor.
2. Loss step time of `SparseGlobalPointerCrossentropy` (span lists) vs
   `GlobalPointerCrossentropy` (dense labels) on the same logits, and the
   bytes of the labels of one batch in each format. Target: sparse no slower
   than dense at seq_len 512.
3. The cost of float32 span scores under mixed precision: under
   `mixed_float16` and `mixed_bfloat16` the heads compute q.k in float32
   (so that large activations cannot overflow), while the floor computes it
   in the policy's half type, the path a user would otherwise get. Printed:
   GP / floor under each policy, next to GP / floor under float32 from the
   same run.
4. Parameter counts of GP and EGP (10 types, hidden 768, head_size 64):
   EGP should be about 0.1x.

    python benchmarks/bench_global_pointer.py           # full
    python benchmarks/bench_global_pointer.py --quick   # seq_len 128, few reps

Times are medians of repeated steps after warm-up, on whatever backend
`KERAS_BACKEND` selects (jit_compile="auto": XLA on TensorFlow and JAX).
`--eager` repeats sections 1 and 2 with `run_eagerly=True` (how PyTorch
always runs, and how TensorFlow users debug), rows marked "eager"; the
eager target is GP / floor <= 1.3x at seq_len 512.

    python benchmarks/bench_global_pointer.py --eager --lengths 512
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from keras import ops  # noqa: E402

from keras_tricks import _numerics, layers, losses  # noqa: E402

HIDDEN, HEADS, HEAD_SIZE = 768, 10, 64


class BareSpanScores(keras.layers.Layer):
    """The floor: Dense to heads * [q, k], then q.k. No RoPE, masks, scale."""

    def build(self, input_shape):
        self.dense = keras.layers.Dense(HEADS * 2 * HEAD_SIZE)
        self.dense.build(input_shape)

    def call(self, x):
        h = ops.reshape(self.dense(x), (-1, ops.shape(x)[1], HEADS, 2 * HEAD_SIZE))
        return ops.einsum("bmhd,bnhd->bhmn", h[..., :HEAD_SIZE], h[..., HEAD_SIZE:])


def mean_output(y_true, y_pred):
    return ops.mean(ops.cast(y_pred, "float32"), axis=(1, 2, 3))


def step_time(model, x, y, reps, warmup=2):
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def head_model(kind, n, eager=False):
    x = keras.Input((n, HIDDEN))
    m = keras.Input((n,), dtype="bool")
    if kind == "floor":
        out, inputs = BareSpanScores()(x), x
    else:
        cls = layers.GlobalPointer if kind == "gp" else layers.EfficientGlobalPointer
        out, inputs = cls(HEADS, HEAD_SIZE)(x, mask=m), [x, m]
    model = keras.Model(inputs, out)
    model.compile(optimizer="sgd", loss=mean_output, run_eagerly=eager)
    return model


class Scale(keras.layers.Layer):
    def build(self, _):
        self.w = self.add_weight(shape=(), initializer="ones")

    def call(self, x):
        return x * self.w


def loss_model(loss, n, eager=False):
    x = keras.Input((HEADS, n, n))
    model = keras.Model(x, Scale()(x))
    model.compile(optimizer="sgd", loss=loss, run_eagerly=eager)
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--lengths", default="128,256,512", help="comma-separated seq_len values")
    ap.add_argument("--spans", type=int, default=16, help="max spans per type (sparse labels)")
    ap.add_argument("--eager", action="store_true", help="also time sections 1 and 2 with run_eagerly=True")
    args = ap.parse_args(argv)
    lengths = (128,) if args.quick else tuple(int(v) for v in args.lengths.split(","))
    reps = 3 if args.quick else args.reps
    rng = np.random.default_rng(0)
    b = args.batch
    print(
        f"backend {keras.backend.backend()}, batch {b}, hidden {HIDDEN}, {HEADS} types, "
        f"head_size {HEAD_SIZE}; median of {reps} train steps (forward + backward + SGD)"
    )

    modes = (False, True) if args.eager else (False,)
    print("\n1. heads vs the bare floor (Dense + q.k einsum)")
    print(f"{'seq_len':>8}{'floor ms':>10}{'GP ms':>10}{'GP/floor':>10}{'EGP ms':>10}{'EGP/floor':>11}")
    for eager in modes:
        for n in lengths:
            x = rng.normal(size=(b, n, HIDDEN)).astype("float32")
            mask = np.ones((b, n), bool)
            mask[: b // 2, n - n // 4 :] = False
            y = np.zeros((b, 1), "float32")
            t = {
                k: step_time(head_model(k, n, eager), x if k == "floor" else [x, mask], y, reps)
                for k in ("floor", "gp", "egp")
            }
            print(
                f"{n:>8}{t['floor'] * 1e3:>10.1f}{t['gp'] * 1e3:>10.1f}"
                f"{t['gp'] / t['floor']:>10.2f}{t['egp'] * 1e3:>10.1f}{t['egp'] / t['floor']:>11.2f}"
                + ("  eager" if eager else "")
            )

    print("\n2. span losses: sparse (span lists) vs dense labels")
    print(
        f"{'seq_len':>8}{'dense ms':>10}{'sparse ms':>11}{'sparse/dense':>14}"
        f"{'dense labels':>14}{'sparse labels':>15}"
    )
    for eager, n in [(e, n) for e in modes for n in lengths]:
        logits = rng.normal(size=(b, HEADS, n, n)).astype("float32")
        logits[..., np.tril_indices(n, -1)[0], np.tril_indices(n, -1)[1]] = _numerics.mask_value("float32")
        spans = np.full((b, HEADS, args.spans, 2), losses.SPAN_PADDING, "int32")
        dense = np.zeros((b, HEADS, n, n), "float32")
        for bi in range(b):
            for h in range(HEADS):
                for r in range(rng.integers(0, args.spans + 1)):
                    s = rng.integers(0, n)
                    e = min(n - 1, s + rng.integers(0, 5))
                    spans[bi, h, r] = (s, e)
                    dense[bi, h, s, e] = 1
        td = step_time(loss_model(losses.GlobalPointerCrossentropy(), n, eager), logits, dense, reps)
        ts = step_time(loss_model(losses.SparseGlobalPointerCrossentropy(), n, eager), logits, spans, reps)
        print(
            f"{n:>8}{td * 1e3:>10.1f}{ts * 1e3:>11.1f}{ts / td:>14.2f}"
            f"{dense.nbytes / 2**20:>11.2f} MiB{spans.nbytes / 2**10:>11.2f} KiB"
            + ("  eager" if eager else "")
        )

    print("\n3. mixed precision: GP's float32 span scores vs the floor's half-precision q.k")
    print(
        f"{'policy':>16}{'seq_len':>8}{'floor ms':>10}{'GP ms':>10}{'GP/floor':>10}{'float32 GP/floor':>18}"
    )
    float32_ratio = {}
    for policy in ("float32", "mixed_float16", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        try:
            for n in lengths:
                x = rng.normal(size=(b, n, HIDDEN)).astype("float32")
                mask = np.ones((b, n), bool)
                y = np.zeros((b, 1), "float32")
                tf_ = step_time(head_model("floor", n), x, y, reps)
                tg = step_time(head_model("gp", n), [x, mask], y, reps)
                float32_ratio.setdefault(n, tg / tf_)
                print(
                    f"{policy:>16}{n:>8}{tf_ * 1e3:>10.1f}{tg * 1e3:>10.1f}{tg / tf_:>10.2f}"
                    f"{float32_ratio[n]:>18.2f}"
                )
        finally:
            keras.config.set_dtype_policy("float32")

    print("\n4. parameters (10 types, hidden 768, head_size 64)")
    x = keras.Input((None, HIDDEN))
    gp, egp = layers.GlobalPointer(HEADS, HEAD_SIZE), layers.EfficientGlobalPointer(HEADS, HEAD_SIZE)
    gp(x), egp(x)
    print(
        f"GlobalPointer {gp.count_params():,}   EfficientGlobalPointer {egp.count_params():,}"
        f"   ratio {egp.count_params() / gp.count_params():.3f}"
    )


if __name__ == "__main__":
    main()
