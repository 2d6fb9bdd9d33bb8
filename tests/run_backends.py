"""Run the test suite on every Keras backend, one process per backend.

    python tests/run_backends.py                 # tensorflow, jax, torch
    python tests/run_backends.py --backends jax  # a subset
    python tests/run_backends.py -- -k squareplus  # extra pytest arguments
    python tests/run_backends.py -- tests/layers   # only these paths

TensorFlow (the default backend) runs the whole suite; JAX and PyTorch run
everything but the tests marked `slow` (end-to-end demo runs), which
includes every test driven by the shared harness (`-m harness`). The backend
is chosen with `KERAS_BACKEND` before Keras is imported, hence one pytest
process per backend. Exits non-zero when any test fails, when a backend
cannot be imported, or when a run collects no test at all. The last line
totals the runs in the form `N passed, N failed, N skipped`.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax", "torch")
MARKERS = {"tensorflow": None, "jax": "not slow", "torch": "not slow"}


def _counts(junit_path):
    suites = ET.parse(junit_path).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")

    passed = failed = skipped = 0
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            junit = os.path.join(tmp, f"{backend}.xml")
            paths = [] if any(not a.startswith("-") for a in args.pytest_args) else ["tests"]
            cmd = [sys.executable, "-m", "pytest", *paths, "-p", "no:cacheprovider",
                   f"--junitxml={junit}", "-o", "junit_family=xunit2"]
            if MARKERS[backend]:
                cmd += ["-m", MARKERS[backend]]
            cmd += args.pytest_args
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
            print(f"\n=== KERAS_BACKEND={backend}: {' '.join(cmd[1:])}", flush=True)
            rc = subprocess.call(cmd, cwd=ROOT, env=env)
            if not os.path.exists(junit):
                problems.append(f"{backend}: pytest did not run (exit {rc})")
                continue
            c = _counts(junit)
            ran = c["tests"] - c["skipped"]
            passed += ran - c["failures"] - c["errors"]
            failed += c["failures"] + c["errors"]
            skipped += c["skipped"]
            if rc == 5 or ran == 0:
                problems.append(f"{backend}: no tests ran")
            elif rc != 0:
                problems.append(f"{backend}: pytest exited {rc}")
    print()
    for p in problems:
        print(f"FAILED: {p}")
    print(f"all backends: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if problems or failed else 0


if __name__ == "__main__":
    sys.exit(main())
