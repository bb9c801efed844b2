"""numba's on-disk cache filled by several processes at once (intsim/numba_cache.py): two processes
save different signatures of one function with their save steps interleaved the way that makes
numba's own cache give both the same data file; with intsim's lock every signature loads its own
code afterwards."""
import os
from pathlib import Path
import pickle
import subprocess
import sys
import textwrap

import pytest

FUNCTION = textwrap.dedent("""
    import numba

    @numba.njit(cache=True)
    def total(x):
        s = 0.0
        for v in x:
            s += v
        return s
""")

# index_wait, data_wait: seconds before writing the index, before writing the data file. Both
# processes read the (empty) index before either writes it; numba alone then gives both data file 1,
# the index ends with the first process's signature and the file with the second's code.
CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import intsim                       # installs the lock
    from numba.core import caching

    dtype, index_wait, data_wait = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    File = caching.IndexDataCacheFile
    save_index, save_data = File._save_index, File._save_data
    File._save_index = lambda self, o: (time.sleep(index_wait), save_index(self, o))[1]
    File._save_data = lambda self, n, d: (time.sleep(data_wait), save_data(self, n, d))[1]
    import cached_total
    print(cached_total.total(np.arange(1, 1001, dtype=dtype)))
""")


def run_children(tmp_path, jobs):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, *map(str, job)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for job in jobs]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    return [float(out) for out, _ in outs]


def index_entries(cache_dir):
    """(signature in the index, signature in the data file it names) of every cached overload."""
    out = []
    for index in Path(cache_dir).rglob("cached_total.total-*.nbi"):
        with open(index, "rb") as f:
            pickle.load(f)
            _, overloads = pickle.loads(f.read())
        for key, name in overloads.items():
            payload = pickle.loads((index.parent / name).read_bytes())
            stored = next(x for x in payload if hasattr(x, "args") and hasattr(x, "return_type"))
            out.append((str(key[0]), str(stored.args)))
    return out


@pytest.mark.slow
def test_concurrent_saves_keep_every_signature_with_its_own_code(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))          # the cached payloads unpickle from it
    (tmp_path / "cached_total.py").write_text(FUNCTION)
    # the float32 process writes the index last, the float64 one its data file last
    first = run_children(tmp_path, [("float32", 1.5, 0.0), ("float64", 1.0, 1.0)])
    assert first == [500500.0, 500500.0]
    entries = index_entries(tmp_path / "cache")
    assert len(entries) == 2 and all(key == stored for key, stored in entries), entries
    # new processes load both signatures from the cache
    assert run_children(tmp_path, [("float32", 0, 0), ("float64", 0, 0)]) == [500500.0, 500500.0]


@pytest.mark.slow
def test_a_mixed_up_cache_is_compiled_again_not_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "cached_total.py").write_text(FUNCTION)
    run_children(tmp_path, [("float32", 0, 0)])
    run_children(tmp_path, [("float64", 0, 0)])
    files = sorted((tmp_path / "cache").rglob("cached_total.total-*.nbc"))
    assert len(files) == 2
    # each signature's index entry now names the other's code (what the race above leaves)
    swap = files[0].with_suffix(".swap")
    files[0].rename(swap), files[1].rename(files[0]), swap.rename(files[1])
    assert not any(key == stored for key, stored in index_entries(tmp_path / "cache"))
    assert run_children(tmp_path, [("float32", 0, 0), ("float64", 0, 0)]) == [500500.0, 500500.0]
