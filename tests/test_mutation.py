"""Mutation testing of the conformance set: every spec-level mutant of tests/mutants.py (rounding
rules, wrap vs saturate, register fields one bit or more short, dropped clamps, fixed numbers off)
must change the output of some conformance case, unless the spec proves it equivalent. The RTL
mutants are in tests/test_rtl.py (built from edited copies of rtl/).

    python -m pytest -q tests/test_mutation.py -s      # prints the score
"""
import numpy as np
import pytest

from intsim.conformance import program_of, run_op, write_conformance
from intsim.errors import IntsimError
from intsim.golden import load
from mutants import MUTANTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def conformance_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("mutation") / "conformance"
    write_conformance(out)
    return load(out)


def killer(golden_set, mutant, monkeypatch):
    """The first case whose output the mutant changes (its name and why), or None."""
    with monkeypatch.context() as m:
        for target, attribute, replacement in mutant.patches:
            m.setattr(target, attribute, replacement)
        for op in golden_set.ops:
            if mutant.kernels and op.attrs["kernel"] not in mutant.kernels:
                continue
            try:
                outs = run_op(program_of(golden_set, op), op.inputs, "reference")
            except (IntsimError, OverflowError) as e:    # an output outside its format, a shift out of range
                return op.name, f"{type(e).__name__}: {e}"
            for got, want in zip(outs, op.outputs):
                if not np.array_equal(np.asarray(got, dtype=np.int64), want):
                    return op.name, "output differs"
    return None


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_is_killed_or_proved_equivalent(conformance_set, mutant, monkeypatch):
    found = killer(conformance_set, mutant, monkeypatch)
    if mutant.equivalent:
        assert found is None, f"{mutant.name}: listed as equivalent but {found[0]} tells it apart"
    else:
        assert found is not None, f"{mutant.name}: no conformance case tells it apart"


def test_the_unmutated_reference_reproduces_every_case(conformance_set, monkeypatch):
    """The runner itself: with no patch, nothing is 'killed'."""
    from mutants import Mutant
    assert killer(conformance_set, Mutant("none", (), ()), monkeypatch) is None
