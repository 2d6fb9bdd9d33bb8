"""Run the test suite and the docstring examples on every Keras backend, one process per backend.

    python tests/run_backends.py                   # tensorflow, jax, torch
    python tests/run_backends.py --backends jax    # a subset
    python tests/run_backends.py --tier fast       # skip the tests marked `slow` everywhere
    python tests/run_backends.py -- -k squareplus  # extra pytest arguments
    python tests/run_backends.py -- tests/layers   # only these paths

Tiers. `--tier all` (the default, and what CI runs): TensorFlow, the default backend, runs every
test (`slow` ones included: end-to-end demos, subprocess and training tests); JAX and PyTorch run
everything not marked `slow`, which includes every test driven by the shared harness
(`-m harness`). `--tier fast` skips `slow` tests on every backend. `--tier harness` runs only the
harness-driven tests and the docstring examples. `--tier floor` (CI's minimum-Keras check): on
TensorFlow, the docstring examples and the tests of every module that uses Keras internals; on
JAX and PyTorch, everything not marked `slow` (the harness included); slow ones aside everywhere.
CI runs it on TensorFlow and PyTorch, whose not-slow suite takes a few minutes. A plain
`python -m pytest` is the fast tier on one backend (pyproject.toml deselects `slow`).

Every run also collects the docstring examples of the package (`--doctest-modules keras_tricks`),
so each example in the documentation runs on all three backends.

XLA compiles with its backend optimisations off (`XLA_FLAGS`, FAST_XLA below) unless
`--optimized-xla` is given or `XLA_FLAGS` is already set: most of the suite's time on JAX (and
TensorFlow's XLA paths) is compiling small test models, and the flags cut it by about a
quarter. They change which kernels fuse, not the semantics; the tests' tolerances are stated
for float rounding, and a plain `python -m pytest` (or `--optimized-xla`) runs the default
optimisation level. JAX also keeps its persistent compilation cache in the run's temporary
directory (unless `JAX_COMPILATION_CACHE_DIR` is set): the harness builds the same small models
again and again, and each program is then compiled once.

The backend is chosen with `KERAS_BACKEND` before Keras is imported, hence one pytest process per
backend. `--jobs N` runs up to N of them at once (default: 2 when the machine has 2 or more CPUs,
else 1); with two or more, tier all runs TensorFlow's slow tests as a process of their own, queued
after JAX, so that the longest backend does not run alone at the end. Each one's output is printed whole when it ends, so logs never interleave. Exits
non-zero when any test fails, when a backend cannot be imported, or when a run collects no test
at all. The last line totals the runs in the form `N passed, N failed, N skipped`.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax", "torch")
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
# pytest -m expressions per tier and backend; "slow or not slow" overrides pyproject's default.
MARKERS = {
    "all": {"tensorflow": "slow or not slow", "jax": "not slow", "torch": "not slow"},
    "fast": {"tensorflow": "not slow", "jax": "not slow", "torch": "not slow"},
    # Doctest items carry the `doctest` marker (the repository's conftest.py).
    "harness": dict.fromkeys(BACKENDS, "harness or doctest"),
    # CI's minimum-Keras check: on TensorFlow the docstring examples and the tests of every
    # module that uses Keras internals (`keras_internals`, set by conftest.py); elsewhere the
    # whole not-slow suite, the harness included (PyTorch's takes minutes, not TensorFlow's 15).
    "floor": {
        "tensorflow": "(doctest or keras_internals) and not slow",
        "jax": "not slow",
        "torch": "not slow",
    },
}
# With several processes at once, tier all runs TensorFlow's slow tests as a job of their own, so
# that the longest backend does not finish alone: (label, backend, marker) in the order queued,
# longest first.
SPLIT_SLOW = "slow"


def _counts(junit_path):
    suites = ET.parse(junit_path).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    return total


def _keras_version(env):
    out = subprocess.run(
        [sys.executable, "-c", "import keras; print(keras.__version__)"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or f"(import failed: {out.stderr.strip()[-300:]})"


def _same_version(a, b):
    """'3.10' and '3.10.0' name one release (pyproject's floor is written the
    first way, keras.__version__ the second)."""

    def parts(v):
        nums = [int(p) if p.isdigit() else p for p in v.split(".")]
        while len(nums) > 1 and nums[-1] == 0:
            nums.pop()
        return nums

    return parts(a) == parts(b)


def _default_jobs():
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _jobs(backends, args):
    """(label, backend, marker, may_be_empty) per pytest process, longest first."""
    markers = MARKERS[args.tier]
    if args.tier != "all" or args.jobs < 2 or "tensorflow" not in backends:
        return [(b, b, markers[b], False) for b in backends]
    # TensorFlow runs every test; its slow ones (a third of its time) become a job of their own.
    jobs = [("tensorflow", "tensorflow", "not slow", False)]
    jobs += [(b, b, markers[b], False) for b in backends if b == "jax"]
    jobs += [("tensorflow (slow)", "tensorflow", SPLIT_SLOW, True)]
    jobs += [(b, b, markers[b], False) for b in backends if b not in ("tensorflow", "jax")]
    return jobs


def _run_backend(job, args, tmp):
    """One pytest process for `job`; returns (lines to print, counts or None, problem or None)."""
    label, backend, marker, may_be_empty = job
    slug = label.replace(" ", "_").replace("(", "").replace(")", "")
    junit = os.path.join(tmp, f"{slug}.xml")
    log = os.path.join(tmp, f"{slug}.log")
    explicit_paths = any(not a.startswith("-") for a in args.pytest_args)
    paths = [] if explicit_paths else ["tests", "keras_tricks"]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *paths,
        "--doctest-modules",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit2",
        "-m",
        marker,
        *args.pytest_args,
    ]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    if not args.optimized_xla:
        env.setdefault("XLA_FLAGS", FAST_XLA)
    if backend == "jax" and "JAX_COMPILATION_CACHE_DIR" not in env:
        # Test models compiled again and again (each harness check builds its own) are compiled
        # once: JAX's persistent cache, in this run's temporary directory, for every program.
        env.update(
            JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "jax-cache"),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    version = _keras_version(env)
    if args.expect_keras and not _same_version(version, args.expect_keras):
        return "", None, f"{label}: expected Keras {args.expect_keras}, imported {version}"
    header = (
        f"\n=== {label}: KERAS_BACKEND={backend}, keras {version}, tier {args.tier}, "
        f"XLA_FLAGS={env.get('XLA_FLAGS', '')!r}: {' '.join(cmd[1:])}\n"
    )
    start = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    with open(log) as out:
        text = header + out.read() + f"=== {label}: {time.monotonic() - start:.0f} s\n"
    if not os.path.exists(junit):
        return text, None, f"{label}: pytest did not run (exit {rc})"
    c = _counts(junit)
    ran = c["tests"] - c["skipped"]
    if rc == 5 or ran == 0:
        # The split-off slow job of a selection without slow tests; its backend's main job
        # still has to run some.
        return text, c, None if may_be_empty else f"{label}: no tests ran"
    if rc != 0:
        return text, c, f"{label}: pytest exited {rc}"
    return text, c, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--tier", choices=sorted(MARKERS), default="all")
    parser.add_argument(
        "--jobs", type=int, default=_default_jobs(), help="backends run at once (default: %(default)s)"
    )
    parser.add_argument(
        "--expect-keras", metavar="VERSION", help="fail unless this Keras version is the one imported"
    )
    parser.add_argument(
        "--optimized-xla",
        action="store_true",
        help="leave XLA's default optimisation level (slower compiles)",
    )
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")

    passed = failed = skipped = 0
    problems = []
    queue = _jobs(backends, args)
    lock = threading.Lock()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:

        def worker():
            nonlocal passed, failed, skipped
            while True:
                with lock:
                    if not queue:
                        return
                    job = queue.pop(0)
                text, c, problem = _run_backend(job, args, tmp)
                with lock:
                    print(text, end="", flush=True)
                    if c is not None:
                        ran = c["tests"] - c["skipped"]
                        passed += ran - c["failures"] - c["errors"]
                        failed += c["failures"] + c["errors"]
                        skipped += c["skipped"]
                    if problem:
                        problems.append(problem)

        threads = [threading.Thread(target=worker) for _ in range(min(args.jobs, len(queue)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print(f"\n=== all backends: {time.monotonic() - started:.0f} s wall, {args.jobs} at once")
    for p in problems:
        print(f"FAILED: {p}")
    print(f"all backends: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if problems or failed else 0


if __name__ == "__main__":
    sys.exit(main())
