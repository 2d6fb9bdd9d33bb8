import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_in_smoke_mode():
    out = subprocess.run(
        [sys.executable, "demos/squareplus_digits.py", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "keras_tricks SquarePlus" in out.stdout
    # The float16 table: Keras's naive formula overflows, ours stays finite.
    row = next(line for line in out.stdout.splitlines() if line.strip().startswith("-300"))
    assert row.split()[2] == "inf" and row.split()[3] != "inf"
