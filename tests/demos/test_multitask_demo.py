import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Four of the 13 (each compiles its own model; all 13 took a minute of CI): a fixed, a
# loss-based, a gradient-based and the primary/auxiliary strategy, whose weights the test
# checks. Every strategy runs through the shared harness (tests/multitask).
STRATEGIES = ("equal", "dwa", "mgda", "primary_auxiliary")


@pytest.mark.slow
def test_multitask_demo_smoke(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("end-to-end demo runs on the default backend only")
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        KERAS_BACKEND="tensorflow",
    )
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "demos", "multitask.py"),
            "--smoke",
            "--strategies",
            ",".join(STRATEGIES),
            "--output",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # TensorFlow's native start-up notices are filtered (demos/_quiet.py)
    assert "absl::InitializeLog" not in proc.stderr and "cuInit" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("strategy"))
    assert lines[header].split() == [
        "strategy",
        "digit",
        "acc",
        "parity",
        "acc",
        "ink",
        "MAE",
        "ink",
        "RMSE",
        "rank",
        "w_digit",
        "w_parity",
        "w_ink",
        "train",
        "s",
    ]
    rows = {}
    for line in lines[header + 2 : header + 2 + len(STRATEGIES)]:
        cells = line.split()
        rows[cells[0]] = [float(c.rstrip("*")) for c in cells[1:]]
    assert sorted(rows) == sorted(STRATEGIES)
    for name, (digit, parity, mae, rmse, rank, w0, w1, w2, seconds) in rows.items():
        assert 0.0 <= digit <= 1.0 and 0.0 <= parity <= 1.0, name
        assert 0.0 < mae <= rmse, name  # RMSE >= MAE for any errors
        assert 1.0 <= rank <= len(STRATEGIES), name
        assert min(w0, w1, w2) >= 0.0 and seconds > 0.0, name
    # Fixed weights stay at 1; MGDA's weights lie on the simplex; the primary
    # task of primary_auxiliary keeps weight 1.
    assert rows["equal"][5:8] == [1.0, 1.0, 1.0]
    assert abs(sum(rows["mgda"][5:8]) - 1.0) < 0.01
    assert rows["primary_auxiliary"][5] == 1.0
    # Every metric column has a best value marked.
    table = "\n".join(lines[header + 2 : header + 2 + len(STRATEGIES)])
    assert table.count("*") >= 6
    assert (tmp_path / "multitask.png").exists()
