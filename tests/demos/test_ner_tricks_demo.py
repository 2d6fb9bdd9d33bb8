"""demos/ner_tricks.py: which tricks each configuration chains, the summary
statistics, and an end-to-end smoke run (TensorFlow only)."""

import importlib.util
import os
import sys

import keras
import numpy as np
import pytest

from keras_tricks import train
from keras_tricks.callbacks import ExponentialMovingAverage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def demo():
    sys.path.insert(0, os.path.join(ROOT, "demos"))
    path = os.path.join(ROOT, "demos", "ner_tricks.py")
    spec = importlib.util.spec_from_file_location("ner_tricks_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configurations_chain_the_named_tricks(demo):
    args = demo.argparse.Namespace(ema_momentum=0.9, fgm_epsilon=0.5, rdrop_alpha=2.0)
    tricks, callbacks = demo.trick_setup("baseline", args)
    assert tricks is None and callbacks() == []
    tricks, callbacks = demo.trick_setup("ema", args)
    assert tricks is None
    (ema,) = callbacks()
    assert isinstance(ema, ExponentialMovingAverage) and ema.momentum == 0.9
    tricks, callbacks = demo.trick_setup("all", args)
    rdrop, fgm = tricks("crf")
    assert isinstance(rdrop, train.RDrop) and (rdrop.alpha, rdrop.divergence) == (2.0, "kl_logits")
    assert isinstance(fgm, train.FGM) and (fgm.embedding, fgm.epsilon) == ("word_embedding", 0.5)
    assert tricks("global")[0].divergence == "auto"  # global_pointer_kl, chosen from the head
    assert len(callbacks()) == 1
    (fgm,) = demo.trick_setup("fgm", args)[0]("global")
    assert isinstance(fgm, train.FGM)


def test_summary_is_mean_and_sample_sd(demo):
    runs = [{"p": p, "r": 0.5, "f1": 0.1 * i, "seconds": 10.0} for i, p in enumerate([0.2, 0.4, 0.9])]
    s = demo.summarise(runs)
    np.testing.assert_allclose(s["p"], (0.5, np.sqrt(((0.2 - 0.5) ** 2 + 0.1**2 + 0.4**2) / 2)))
    assert s["r"] == (0.5, 0.0) and s["seconds"][0] == 10.0
    assert demo.summarise(runs[:1])["f1"] == (0.0, 0.0)


def test_bad_flags_are_refused(demo):
    for flags in (["--configs", "baseline,magic"], ["--heads", "bio"], ["--seeds", "a"]):
        with pytest.raises(SystemExit):
            demo.main(flags)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="demo test runs on TF only")
def test_smoke_run_trains_every_head_with_all_tricks(demo):
    table = demo.main(["--smoke", "--seeds", "0", "--configs", "baseline,all", "--heads", "global,crf"])
    assert [(h, c) for h, c, _, _ in table] == [
        ("global", "baseline"),
        ("global", "all"),
        ("crf", "baseline"),
        ("crf", "all"),
    ]
    for _, _, summary, runs in table:
        assert len(runs) == 1
        for key in ("p", "r", "f1"):
            mean, sd = summary[key]
            assert 0.0 <= mean <= 1.0 and sd == 0.0
        assert summary["seconds"][0] > 0
