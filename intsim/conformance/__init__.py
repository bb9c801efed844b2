"""Conformance vectors: directed corner cases plus seeded random vectors for every kernel.

`write_conformance(out_dir)` writes one directory in the golden dump format (docs/golden.md:
manifest.json of schema "intsim-golden", act/ and const/ files, npy / bin / hex), readable with
`intsim.golden.load`. Each op record is one (kernel, case): its name is `<kernel>.<case>`, its
`attrs` hold `kernel` and `case`, and its tensors are `act/<kernel>.<case>.<in|out|...>` and
`const/<kernel>.<case>.<constant>`. A testbench picks the cases of one kernel by `attrs.kernel`.

Each case is a one-op integer program (`case_program`): its expected outputs are *computed* by
that op's reference path through the op registry (`ops.program_op(kind).run(..., "reference")`,
the plain NumPy kernels), never written by hand, and its constants are checked against and written
in the registers their op declares, exactly as a model's golden dump writes them. The cases are
designed to reach the corners named in the spec's coverage bins (docs/conformance.md);
`intsim.coverage` checks that they actually do, from the dumped inputs and constants alone.
"""
from .cases import Case
from .registry import CONFORMANCE_SCHEMA, GENERATORS, KERNELS
from .writer import (case_program, cases_of, check_kernels, iter_cases, program_of, reference_outputs,
                     run_op, write_conformance)

__all__ = ["CONFORMANCE_SCHEMA", "Case", "GENERATORS", "KERNELS", "case_program", "cases_of", "check_kernels",
           "iter_cases", "program_of", "reference_outputs", "run_op", "write_conformance"]
