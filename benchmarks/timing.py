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


def median_times(fns, repeat):
    """median_time for several functions measured side by side: one warm-up call each, then
    `repeat` rounds calling every function once, so a change of machine load hits all alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]
