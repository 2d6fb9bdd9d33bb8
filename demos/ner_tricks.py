"""Fine-tuning tricks on NER: baseline, + EMA, + FGM, + R-Drop, + all, over seeds.

    python demos/ner_tricks.py                        # wikigold, GlobalPointer and CRF, seeds 0,1,2
    python demos/ner_tricks.py --heads global --seeds 0
    python demos/ner_tricks.py --configs baseline,rdrop --epochs 10
    python demos/ner_tricks.py --train a.conll --dev b.conll --test c.conll
    python demos/ner_tricks.py --smoke                # seconds, for tests

The encoder, heads, data handling and scoring are those of
`demos/ner_global_pointer.py` (word embedding + character CNN + BiLSTM from
scratch; entity-level micro P/R/F1 on the held-out test set, exact span and
type, the best dev epoch's weights). Each configuration trains the same
model from the same seed; only the training changes:

* `baseline`: Adam, as in the NER demo;
* `ema`: + `callbacks.ExponentialMovingAverage(--ema-momentum)`; dev
  scoring, the kept best epoch and the test score use the averaged weights;
* `fgm`: + `train.FGM` on the word embedding (`--fgm-epsilon`, the whole
  matrix's Frobenius norm);
* `rdrop`: + `train.RDrop(--rdrop-alpha)`: `global_pointer_kl` for the
  GlobalPointer head (chosen from the head), the token-level KL of the
  emissions for the CRF (`divergence="kl_logits"`; the KL between the two
  passes' CRF path distributions is not what is computed);
* `all`: EMA + R-Drop + FGM together (one `TrickModel`, tricks in that order).

The split (wikigold: by document, 70/15/15) is fixed by `--split-seed`; a
training seed (`--seeds`) sets the initial weights, the batch order and the
dropout draws. The table gives the mean and the sample standard deviation
over the seeds of the test P/R/F1, and the mean training time.
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ner_global_pointer as ner  # noqa: E402  (sets up Keras quietly)

keras = ner.keras
from keras_tricks import train as kt_train  # noqa: E402
from keras_tricks.callbacks import ExponentialMovingAverage  # noqa: E402

CONFIGS = ("baseline", "ema", "fgm", "rdrop", "all")
WORD_EMBEDDING = "word_embedding"  # the layer's name in demos/_text_encoder.py


def _choices(allowed, what):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{what} must be a comma-separated list from {allowed}, got {text!r}"
            )
        return items

    return parse


def _seeds(text):
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("seeds: give at least one")
    return seeds


def trick_setup(config, args):
    """(tricks(head) -> the trick chain, or None without FGM and R-Drop;
    callbacks() -> the EMA callback or nothing) for one configuration."""
    ema = config in ("ema", "all")
    fgm = config in ("fgm", "all")
    rdrop = config in ("rdrop", "all")

    def tricks(head):
        chain = []
        if rdrop:
            chain.append(
                kt_train.RDrop(args.rdrop_alpha, divergence="kl_logits" if head == "crf" else "auto")
            )
        if fgm:
            chain.append(kt_train.FGM(WORD_EMBEDDING, epsilon=args.fgm_epsilon))
        return chain

    def callbacks():
        return [ExponentialMovingAverage(args.ema_momentum)] if ema else []

    return (tricks if (fgm or rdrop) else None), callbacks


def summarise(runs):
    """{metric: (mean, sample sd)} over runs (sd 0 for one run)."""
    out = {}
    for key in ("p", "r", "f1", "seconds"):
        values = np.array([r[key] for r in runs], np.float64)
        out[key] = (values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--train", default=ner.DEFAULT_DATA, help="as in ner_global_pointer.py (default: wikigold)"
    )
    ap.add_argument("--dev", help="dev file, used whole (default: split from --train)")
    ap.add_argument("--test", help="test file, used whole (default: split from --train)")
    ap.add_argument(
        "--heads",
        type=_choices(("global", "efficient", "crf"), "heads"),
        default=["global", "crf"],
        help="comma-separated heads from global, efficient, crf (default global,crf)",
    )
    ap.add_argument(
        "--configs",
        type=_choices(CONFIGS, "configs"),
        default=list(CONFIGS),
        help=f"comma-separated configurations from {','.join(CONFIGS)} (default: all five)",
    )
    ap.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="training seeds (default 0,1,2)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the train/dev/test split")
    ap.add_argument("--ema-momentum", type=float, default=0.99)
    ap.add_argument("--fgm-epsilon", type=float, default=1.0)
    ap.add_argument("--rdrop-alpha", type=float, default=4.0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--max-train", type=int, default=0)
    ap.add_argument("--verbose", type=int, choices=[0, 1, 2], default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny run for tests (seconds)")
    args = ap.parse_args(argv)
    model_args = dict(word_dim=100, char_dim=30, char_filters=50, lstm=100, head_size=64, dropout=0.3)
    if args.smoke:
        model_args.update(word_dim=8, char_dim=8, char_filters=8, lstm=8, head_size=8)
        args.epochs, args.max_train, args.max_len = 1, 32, 16
    base = argparse.Namespace(
        **vars(args),
        **model_args,
        head="global",
        max_span_length=None,
        thresholds=None,
        workers=0,
        jit=False,
        eager=args.smoke,
        seed=args.split_seed,
    )

    train, dev, test, where = ner.load_data(base)
    nested = any(len(ner.outermost(s.spans)) < len(s.spans) for s in train + dev + test)
    vocab = ner.Vocab(train)
    print(
        f"keras_tricks {ner.keras_tricks.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )
    print(
        f"data: train {ner._shown(args.train)}: {len(train)} sentences; dev {where['dev']}: {len(dev)}; "
        f"test {where['test']}: {len(test)}; split seed {args.split_seed}; training seeds {args.seeds}"
    )
    table = []
    for head in args.heads:
        for config in args.configs:
            runs = []
            for seed in args.seeds:
                run_args = argparse.Namespace(**vars(base))
                run_args.seed = seed
                run_args.tricks, run_args.callbacks = trick_setup(config, run_args)
                r = ner.run_head(head, train, dev, test, vocab, run_args, nested)
                print(
                    f"{head:<10}{config:<10} seed {seed}: test P {r['p']:.4f} R {r['r']:.4f} "
                    f"F1 {r['f1']:.4f}, {r['seconds']:.1f} s",
                    flush=True,
                )
                runs.append(r)
            table.append((head, config, summarise(runs), runs))

    print(f"\nTest entity-level micro scores, mean ± sd over seeds {args.seeds} (best dev epoch each):")
    print(f"{'head':<10}{'config':<10}{'precision':>16}{'recall':>16}{'F1':>16}{'train s':>10}")
    for head, config, s, _ in table:
        cells = "".join(f"{s[k][0]:>9.4f}±{s[k][1]:<6.4f}" for k in ("p", "r", "f1"))
        print(f"{head:<10}{config:<10}{cells}{s['seconds'][0]:>10.1f}")
    return table


if __name__ == "__main__":
    main()
