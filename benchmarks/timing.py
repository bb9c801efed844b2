"""The one timing rule of the benchmarks: one warm-up call (JIT cache load, first-touch
allocations), then the median wall time of `repeat` calls, in seconds."""
import statistics
import time


def median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
