"""numba compiles each kernel once: a second process loads the cached machine code."""
import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, numpy as np, numba
from numba.core.registry import CPUDispatcher
from intsim.arith import IntFormat
from intsim.kernels import candidates
from intsim.kernels import requantize as rq, add, gelu, softmax, layernorm
i8, i16 = IntFormat(8), IntFormat(16)
q8 = np.arange(-128, 128, dtype=np.int8).reshape(4, 64)
rq.requantize(q8.astype(np.int32), 1 << 30, 31, i8)
add.residual_add(q8, q8, 1 << 30, 31, 1 << 30, 31, i16)
for k in candidates("gelu").values():
    k.fast([q8], k.plan(0.05, i8))
for k in candidates("softmax").values():
    k.fast([q8], k.plan(0.05, i8, out_bits=8))
for k in candidates("layernorm").values():
    k.fast([q8.astype(np.int16)], k.plan(0.01, i16, gamma=np.ones(64), beta=np.zeros(64)))
hits = misses = 0
for mod in (rq, add, gelu, softmax, layernorm):
    for obj in vars(mod).values():
        if isinstance(obj, CPUDispatcher):
            hits += sum(obj.stats.cache_hits.values())
            misses += sum(obj.stats.cache_misses.values())
print(json.dumps({"hits": hits, "misses": misses}))
"""


def run_probe():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_does_not_recompile():
    run_probe()                      # populates the cache if this checkout has none yet
    second = run_probe()
    assert second["misses"] == 0, second
    assert second["hits"] > 0, second
