"""Running many tasks: in this process, on local cores (ProcessPoolExecutor), or on a Dask cluster,
through one entry point, `run_tasks` (sweeps and selection both use it).

Threads: every worker pins BLAS and numba to its share of the cores (several BLAS threads per worker
only fight over them). SIGTERM interrupts like Ctrl-C (`interrupt_on_term`), so finished results
stay and the workers are stopped.
"""
import concurrent.futures as cf
import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import threading

import numba

from ..errors import ExperimentError, Terminated

try:                                  # optional: spawned workers still get OPENBLAS_NUM_THREADS
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None


def default_workers():
    return max(1, os.cpu_count() or 1)


def _limit_threads(threads):
    """Pin BLAS and numba to `threads` in this process; returns a function restoring them. The
    matmuls are small: several BLAS threads per worker only fight over the cores (measured 4-13x
    slower on a busy 2-core box)."""
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    limits = threadpool_limits(threads) if threadpool_limits is not None else None

    def restore():
        numba.set_num_threads(before)
        if limits is not None:
            limits.restore_original_limits()
    return restore


def _limited_call(fn, ctx, item, threads):
    _limit_threads(threads)
    return fn(ctx, item)


_WORKER = {}


def _die_with_parent(parent):
    """Linux: the kernel kills this worker when the process that started it dies, even by SIGKILL
    (PR_SET_PDEATHSIG), so an interrupted run leaves no workers behind. Elsewhere: a no-op."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))    # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:          # the parent died before the request took effect
        os._exit(1)


def _pool_init(fn, ctx, threads, parent):
    # Ctrl-C reaches every process of the terminal's group: the parent stops the workers, which
    # would otherwise each print a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _WORKER.update(fn=fn, ctx=ctx)
    _limit_threads(threads)


def _pool_call(item):
    return _WORKER["fn"](_WORKER["ctx"], item)


def run_tasks(fn, ctx, items, workers=None, scheduler=None, on_result=None):
    """Call fn(ctx, item) for every item and on_result(item, result) in the caller as each one
    finishes (completion order). fn must be a module-level function (it is pickled by name).

    scheduler=None: local processes (`workers`, default all cores; 1 = in this process).
    scheduler='local': a Dask LocalCluster with `workers` processes; otherwise a Dask scheduler
    address (tcp://host:8786). ctx is shipped once per worker, not once per item."""
    items = list(items)
    workers = workers or default_workers()
    if workers < 1:
        raise ExperimentError(f"--workers must be >= 1, got {workers}")
    on_result = on_result or (lambda item, result: None)
    if scheduler:
        return _run_dask(fn, ctx, items, workers, scheduler, on_result)
    threads = max(1, default_workers() // workers)
    if workers == 1 or len(items) <= 1:
        restore = _limit_threads(threads)
        try:
            for item in items:
                on_result(item, fn(ctx, item))
        finally:
            restore()
        return
    # spawn, not fork: the parent has run numba-parallel and BLAS code, whose thread pools are not
    # all fork-safe; the env var reaches BLAS in the children before NumPy loads it
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    try:
        with cf.ProcessPoolExecutor(min(workers, len(items)), mp.get_context("spawn"),
                                    initializer=_pool_init, initargs=(fn, ctx, threads, os.getpid())) as pool:
            futures = {pool.submit(_pool_call, item): item for item in items}
            try:
                for fut in cf.as_completed(futures):
                    on_result(futures[fut], fut.result())
            except BaseException:
                # interrupted (or a task failed): stop the workers now rather than wait for them;
                # their points simply run again on resume. The pool, broken, fails every future
                # itself: cancelling them first races its manager thread, which then dies on a
                # cancelled one with a traceback (InvalidStateError, CPython 3.11)
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                raise
    finally:
        if saved is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved



def _run_dask(fn, ctx, items, workers, scheduler, on_result):
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ExperimentError("running on Dask needs the 'dask' extra: pip install 'intsim[dask]' "
                         "(dask[distributed])") from None
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        ctx_future = client.scatter(ctx, broadcast=True)
        futures = {client.submit(_limited_call, fn, ctx_future, item, 1, pure=False): item
                   for item in items}
        for fut in as_completed(futures):
            on_result(futures[fut], fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def interrupt_on_term():
    """SIGTERM (kill) interrupts like Ctrl-C (as errors.Terminated, a KeyboardInterrupt), so
    finished results stay, temporaries are removed and workers are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
