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


def median_times(fns, repeat, min_seconds=0.0, max_repeat=50):
    """median_time for several functions measured side by side: one warm-up call each, then
    `repeat` rounds calling every function once, so a change of machine load hits all alike. With
    min_seconds, short rounds are repeated until about that long (at most max_repeat rounds): the
    median of few short rounds on a loaded machine is mostly noise."""
    t0 = time.perf_counter()
    for fn in fns:
        fn()
    round_time = time.perf_counter() - t0
    if min_seconds and round_time > 0:
        repeat = max(repeat, min(max_repeat, int(min_seconds / round_time)))
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]
