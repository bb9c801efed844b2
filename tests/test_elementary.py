"""intsim.elementary: exp, log and erf from IEEE-754 basic arithmetic only. Accuracy against the C
library's functions (Python's math, within 1 ulp themselves: each bound below has 1 ulp of margin
for the reference), special values, erf's symmetry and monotonicity, the machine code free of fused
multiply-adds, the constants equal to what scripts/fit_elementary.py derives, and the same bits on
a generic x86-64 as on the host CPU."""
import math
import os
import platform
import re
import subprocess
import sys

import numba
import numpy as np
import pytest

from conftest import load_script
from intsim import elementary as E

RNG_SEED = 20240611
FMA = re.compile(r"\bvf(n?m(add|sub)|maddsub|msubadd)", re.IGNORECASE)


def ulps(got, ref_fn, x):
    """|got - ref| in units of the reference's last place (subnormal spacing below 2^-1022)."""
    ref = np.array([ref_fn(v) for v in x.tolist()])
    spacing = np.array([math.ulp(r) for r in ref.tolist()])
    return np.abs(got - ref) / spacing, ref


def bits(a):
    return np.asarray(a, dtype=np.float64).view(np.int64)


# --- exp ---------------------------------------------------------------------------------------------

def test_exp_within_2_ulp():
    rng = np.random.default_rng(RNG_SEED)
    x = np.concatenate([
        rng.uniform(-745.2, 709.78, 100_000),          # the whole domain
        rng.uniform(-1, 1, 40_000),
        rng.uniform(-1e-8, 1e-8, 5_000),
        rng.uniform(-745.2, -708.3, 20_000),           # subnormal results
        rng.uniform(700, 709.78, 5_000),
        np.arange(-1074, 1024) * math.log(2),          # near the reduction's boundaries
        (np.arange(-1074, 1024) + 0.5) * math.log(2),
    ])
    err, _ = ulps(E.exp(x), math.exp, x)
    assert err.max() <= 3, x[err.argmax()]


def test_exp_special_values():
    assert E.exp1(0.0) == 1.0 and E.exp1(-0.0) == 1.0
    x = np.array([-np.inf, -1e308, -746.0, 710.0, 1e308, np.inf])
    assert E.exp(x).tolist() == [0.0, 0.0, 0.0, np.inf, np.inf, np.inf]
    assert np.isnan(E.exp1(np.nan)) and np.isnan(E.exp(np.array([np.nan]))[0])
    assert math.isfinite(E.exp1(709.782712893384))                 # the largest finite exp
    assert E.exp1(-745.1332191019411) == 5e-324                    # the smallest subnormal


# --- log ---------------------------------------------------------------------------------------------

def test_log_within_2_ulp():
    rng = np.random.default_rng(RNG_SEED + 1)
    x = np.concatenate([
        np.ldexp(rng.uniform(1, 2, 100_000), rng.integers(-1074, 1024, 100_000)),   # normal and subnormal
        np.ldexp(rng.uniform(1, 2, 10_000), rng.integers(-1074, -1022, 10_000)),
        rng.uniform(0.7, 1.42, 40_000),                                              # no exponent
        1 + rng.uniform(-1e-8, 1e-8, 5_000),
        [5e-324, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308, 0.5, 2.0, math.e],
    ])
    x = x[x > 0]
    err, _ = ulps(E.log(x), math.log, x)
    assert err.max() <= 3, x[err.argmax()]


def test_log_special_values():
    assert E.log1(1.0) == 0.0
    x = np.array([0.0, -0.0, np.inf, -1.0, -5e-324, -np.inf, np.nan])
    y = E.log(x)
    assert y[:3].tolist() == [-np.inf, -np.inf, np.inf]
    assert np.isnan(y[3:]).all()


# --- erf ---------------------------------------------------------------------------------------------

def test_erf_relative_near_zero_absolute_elsewhere():
    rng = np.random.default_rng(RNG_SEED + 2)
    x = np.concatenate([
        rng.uniform(-7, 7, 150_000),
        rng.uniform(-1.2, 1.2, 50_000),                # around the switch from series to tail
        rng.uniform(-0.5, 0.5, 30_000),
        np.ldexp(rng.uniform(1, 2, 5_000), rng.integers(-1074, -1, 5_000)),
    ])
    y = E.erf(x)
    err, ref = ulps(y, math.erf, x)
    near = np.abs(x) <= 0.5
    assert err[near].max() <= 5, x[near][err[near].argmax()]
    far = ~near
    spacing = np.array([math.ulp(r) for r in ref[far].tolist()])
    assert (np.abs(y[far] - ref[far]) <= 4e-16 + spacing).all()


def test_erf_special_values():
    assert bits(E.erf1(0.0)) == bits(0.0) and bits(E.erf1(-0.0)) == bits(-0.0)
    x = np.array([-np.inf, -1e300, -6.0, 6.0, 1e300, np.inf])
    assert E.erf(x).tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    assert np.isnan(E.erf1(np.nan))


def test_erf_is_odd_bit_for_bit():
    rng = np.random.default_rng(RNG_SEED + 3)
    x = np.concatenate([rng.uniform(0, 7, 100_000), rng.uniform(0, 1e-300, 100),
                        [0.0, 5e-324, 0.5, 1.0, 5.9, 6.0, np.inf]])
    assert (bits(E.erf(-x)) == bits(-E.erf(x))).all()


def test_erf_is_monotone():
    y = E.erf(np.linspace(-7, 7, 1_400_001))
    assert (np.diff(y) >= 0).all()


# --- the array and scalar interfaces -----------------------------------------------------------------

@numba.njit          # not cached: a cache would keep the inlined code of an older intsim.elementary
def _jitted_caller(x):
    out = np.empty((3, x.size))
    for i in range(x.size):
        out[0, i] = E.exp1(x[i])
        out[1, i] = E.log1(x[i])
        out[2, i] = E.erf1(x[i])
    return out


def test_scalar_array_and_jitted_callers_agree():
    rng = np.random.default_rng(RNG_SEED + 4)
    x = np.concatenate([rng.uniform(-20, 20, 500), [0.0, -0.0, np.inf, -np.inf, 1e-310]])
    arrays = np.stack([E.exp(x), E.log(x), E.erf(x)])
    scalars = np.array([[f(v) for v in x.tolist()] for f in (E.exp1, E.log1, E.erf1)])
    assert (bits(arrays) == bits(scalars)).all()
    assert (bits(_jitted_caller(x)) == bits(arrays)).all()


def test_arrays_of_any_shape_and_float_dtype():
    x = np.random.default_rng(RNG_SEED + 5).uniform(0.1, 3, (4, 6))
    for f in (E.exp, E.log, E.erf):
        y = f(x)
        assert y.shape == (4, 6) and y.dtype == np.float64
        assert (bits(f(x.T)) == bits(y.T)).all()                                 # not contiguous
        x32 = x.astype(np.float32)
        assert (bits(f(x32)) == bits(f(x32.astype(np.float64)))).all()         # float32: exactly widened
        assert f(np.float64(0.5)).shape == () and f([1, 2]).shape == (2,)
    with pytest.raises(TypeError):
        E.exp(np.array([1j]))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="reads x86 assembly")
def test_machine_code_has_no_fused_multiply_add():
    # Fresh compilations of the same Python functions: numba does not show the machine code of
    # functions it loaded from its cache. The scalar functions are inlined into the loops.
    f64 = numba.float64
    for loop in (E._exp_loop, E._log_loop, E._erf_loop):
        fresh = numba.njit(nogil=True)(loop.py_func)
        fresh.compile((f64[::1], f64[::1]))
        asm = fresh.inspect_asm(fresh.signatures[0])
        assert "mulpd" in asm or "mulsd" in asm                  # this is the arithmetic
        assert not FMA.search(asm), FMA.search(asm).group(0)


# --- the constants, and the bits across CPUs ---------------------------------------------------------

def test_constants_are_the_fit_scripts():
    fit = load_script("scripts/fit_elementary.py")
    for name, value in fit.constants(fit.fits()).items():
        assert getattr(E, name) == value, name


PROBE = r"""
import hashlib

import numpy as np
from intsim import elementary as E

def uniform(seed, n, lo, hi):
    # inputs from integer arithmetic (splitmix64), independent of NumPy's random streams
    z = (np.arange(n, dtype=np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return lo + (hi - lo) * ((z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53)

n = 1_000_000
parts = [E.exp(uniform(1, n, -745.2, 709.78)), E.exp(uniform(2, n, -20.0, 0.0)),
         E.log(np.ldexp(uniform(3, n, 1.0, 2.0), uniform(4, n, -1074, 1024).astype(np.int64))),
         E.log(uniform(5, n, 0.0, 1.0)), E.erf(uniform(6, n, -7.0, 7.0))]
print(hashlib.sha256(b"".join(p.tobytes() for p in parts)).hexdigest())
"""


def probe_digest(env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=900,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


# The digest of the probe's outputs on the machine that wrote this test (AVX-512 with FMA, glibc
# 2.36, NumPy 2.4, numba 0.68; the same with glibc told to use no FMA/AVX2/AVX-512). Any other
# digest is the machine dependence this module exists to remove, unless the constants were
# regenerated on purpose.
PROBE_DIGEST = "b4c98edab2c73eaa3bb8458e414a102aef923e973265da4a17499466adea78f0"


@pytest.mark.slow
def test_same_bits_on_a_generic_cpu_as_on_the_host(tmp_path):
    generic = probe_digest({"NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path)})
    host = probe_digest({})
    assert generic == host == PROBE_DIGEST
