import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_ema_demo_smoke():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "demos", "ema.py"), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # TensorFlow's native start-up notices are filtered (demos/_quiet.py)
    assert "absl::InitializeLog" not in proc.stderr and "cuInit" not in proc.stderr, proc.stderr[-2000:]
    assert "raw val acc" in proc.stdout and "EMA val acc" in proc.stdout
    assert os.path.exists(os.path.join(ROOT, "demos", "output", "ema.png"))
