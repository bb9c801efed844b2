"""numba's on-disk cache (`cache=True`), safe when several processes fill it at once.

numba saves a compiled function by reading the function's index, taking the first free data-file
number, then writing the index and the data file, with no lock between the steps. Two processes
that compile different signatures of one function at the same moment (sweep workers on a fresh
install, two settings of the reproducibility test) can both take number 1: the index then names
one signature and the file holds the other's machine code, and every later process that loads that
signature runs code built for other argument types on its arrays - silently wrong numbers, not an
error (seen: the sum of the int32 numbers 1..1000 returned as 7e-40). The race is
numba's own (numba issues #10128 and kin); `install` closes it by holding an exclusive lock on
`<index>.lock` (fcntl.flock) across the whole save, so saves of one function follow one another.
Loads need no lock: the index and the data files are each replaced atomically by numba, and a
save writes its index entry only together with its own data file. A load also checks that the
data file holds the signature it was looked up for, so a cache mixed up before (by an older
intsim, or by another program's numba) is compiled again instead of run.

Where there is no fcntl (Windows) saves are not locked; where numba's cache class has another
shape, nothing changes.
"""
import contextlib
import functools
import os

try:
    import fcntl
except ImportError:         # not POSIX: numba's own behaviour
    fcntl = None

from numba.core import caching


@contextlib.contextmanager
def save_lock(index_path):
    """An exclusive inter-process lock for saving into the cache whose index is `index_path`;
    no lock where the lock file cannot be made (a read-only cache: numba then saves nothing) or
    there is no fcntl."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(f"{index_path}.lock", os.O_CREAT | os.O_RDWR, 0o666)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)            # closing releases the lock


def stored_signature_matches(key, payload):
    """Whether a cached payload was compiled for the argument types in its index key (True where
    either has a shape this check does not know)."""
    wanted = getattr(key[0], "args", key[0]) if isinstance(key, tuple) and key else None
    stored = next((x for x in payload if hasattr(x, "args") and hasattr(x, "return_type")), None) \
        if isinstance(payload, tuple) else None
    if not isinstance(wanted, tuple) or stored is None:
        return True
    return tuple(stored.args) == wanted


def install():
    """Make numba's cache saves in this process take `save_lock` and its loads check the
    signature (idempotent)."""
    cache_file = getattr(caching, "IndexDataCacheFile", None)
    save, load = getattr(cache_file, "save", None), getattr(cache_file, "load", None)
    if save is None or load is None or getattr(save, "wrapped_by_intsim", False):
        return

    @functools.wraps(save)
    def locked_save(self, key, data):
        with save_lock(self._index_path):
            return save(self, key, data)

    @functools.wraps(load)
    def checked_load(self, key):
        payload = load(self, key)
        return payload if payload is None or stored_signature_matches(key, payload) else None

    locked_save.wrapped_by_intsim = True
    cache_file.save, cache_file.load = locked_save, checked_load
