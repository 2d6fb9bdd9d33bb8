"""demos/ee_gplinker.py: the DuEE reader, the truncation rule, and a smoke run
on a tiny synthetic file written here (never the shared data)."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _demo():
    path = os.path.join(ROOT, "demos", "ee_gplinker.py")
    spec = importlib.util.spec_from_file_location("ee_gplinker_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _event(kind, trigger, t_start, *args):
    return {
        "event_type": kind,
        "trigger": trigger,
        "trigger_start_index": t_start,
        "arguments": [{"role": r, "argument": a, "argument_start_index": s} for r, a, s in args],
    }


RECORDS = [
    {
        "text": "甲攻击乙于今天",
        "event_list": [_event("攻击", "攻击", 1, ("攻击者", "甲", 0), ("时间", "今天", 5))],
    },
    {"text": "丙会见丁", "event_list": [_event("会见", "会见", 1, ("会见方", "丙", 0), ("会见方", "丁", 3))]},
    {"text": "无事发生", "event_list": []},
]
SCHEMA = [
    {"event_type": "攻击", "role_list": [{"role": "攻击者"}, {"role": "时间"}]},
    {"event_type": "会见", "role_list": [{"role": "会见方"}]},
]


def _write(tmp_path, name, records):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    return str(path)


def test_reader_and_truncation(tmp_path):
    demo = _demo()
    first = demo.read_duee(_write(tmp_path, "a.json", RECORDS))[0]
    assert first.tokens == list("甲攻击乙于今天")
    assert first.events == [
        (("攻击", "攻击者", (0, 0)), ("攻击", "触发词", (1, 2)), ("攻击", "时间", (5, 6)))
    ]
    labels = [("攻击", "触发词"), ("攻击", "攻击者"), ("攻击", "时间")]
    # Cut at 5 characters: the time goes; cut at 2: the trigger (1, 2) goes and the event with it.
    assert demo.kept(first.events, labels, 5) == [list(first.events[0][:2])]
    assert demo.kept(first.events, labels, 2) == []
    bad = [{**RECORDS[0], "event_list": [_event("攻击", "攻击", 2)]}]
    with pytest.raises(ValueError, match="line 1"):
        demo.read_duee(_write(tmp_path, "bad.json", bad))


@pytest.mark.slow
def test_smoke_run(tmp_path):
    demo = _demo()
    train = _write(tmp_path, "train.json", RECORDS * 4)
    test = _write(tmp_path, "test.json", RECORDS)
    schema = _write(tmp_path, "schema.json", SCHEMA)
    out = demo.main(["--train", train, "--test", test, "--schema", schema, "--smoke", "--verbose", "0"])
    assert set(out["scores"]) == {"event", "argument"} and out["best_epoch"] == 1
    assert all(0.0 <= v <= 1.0 for prf in out["scores"].values() for v in prf)
