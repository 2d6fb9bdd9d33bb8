"""The timing rule the benchmarks share: warm-up calls first (tracing and
compiling), then the median of repeated calls."""

import time

import numpy as np


def median_time(fn, reps, warmup=1):
    """Median seconds of `reps` calls of `fn`, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))
