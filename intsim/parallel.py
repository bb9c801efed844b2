"""Row-parallel set-up work: a nogil numba loop over independent rows (or elements) split into
contiguous chunks, one per thread, so each row is computed exactly as the serial loop computes it
(no result depends on the thread count).

The thread count is numba's (`numba.get_num_threads()`): all cores by default, and what a sweep
worker pins it to (intsim/experiment/tasks.py), so workers do not oversubscribe the cores. Plain
Python threads that sleep when idle, not a numba parallel region: OpenMP's waiting threads spin
and slow the BLAS products that run next on a busy machine (intsim/floatfn.py). Used for offline
work only (calibration's float GELU, the weight clip searches), never by the integer executor.
"""
from concurrent.futures import ThreadPoolExecutor
import os

import numba

MIN_ELEMENTS = 1 << 16          # below this, one thread: a hand-off costs more than it saves

_pool, _pool_size, _pool_pid = None, 0, None


def threads():
    return max(1, numba.get_num_threads())


def chunks(n, parts):
    """`parts` contiguous (start, stop) ranges covering range(n), in order."""
    step = -(-n // parts)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def map_rows(fn, n_rows, elements, min_elements=MIN_ELEMENTS):
    """[fn(start, stop) for the chunks of range(n_rows)], on threads when `elements` (the work in
    all rows) reaches `min_elements`; fn must release the GIL (a nogil numba function) and touch
    only its rows."""
    parts = min(threads(), n_rows) if elements >= min_elements else 1
    ranges = chunks(n_rows, parts) if n_rows else [(0, 0)]
    if len(ranges) == 1:
        return [fn(*ranges[0])]
    global _pool, _pool_size, _pool_pid
    # a forked child inherits the pool object but not its threads: it makes its own
    if _pool_size < len(ranges) or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(len(ranges), thread_name_prefix="intsim-rows")
        _pool_size, _pool_pid = len(ranges), os.getpid()
    return list(_pool.map(lambda r: fn(*r), ranges))
