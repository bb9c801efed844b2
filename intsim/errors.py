"""Every error intsim raises on purpose, in one place (the lowest layer: anyone may raise them).

All derive from IntsimError (a ValueError), so a command line prints any of them as one line. Each
message names what is wrong: the node or op, the tensor, the value and the rule (spec section)."""


class IntsimError(ValueError):
    """Base of every deliberate intsim error. Its text is one line, whatever a library it quotes
    put in the message (the command line prints errors as one line)."""

    def __str__(self):
        return " ".join(line.strip() for line in super().__str__().splitlines() if line.strip())


class IntsimWarning(UserWarning):
    """Something was computed, but information was lost (e.g. a tensor calibrated on zeros only);
    the command line prints it as one line."""


class GraphError(IntsimError):
    """A semantic graph that is malformed (unknown op, missing tensor, inconsistent shapes)."""


class CompileError(IntsimError):
    """The graph cannot be compiled as configured; the message names the node."""


class ExecutionError(IntsimError):
    """An op failed; the message names the op (index, kind, name) and the cause."""


class ProgramError(IntsimError):
    """An integer program that cannot be loaded or is inconsistent (file, op, constant)."""


class DataError(IntsimError):
    """Input data that cannot be used: missing, wrong shape, NaN/Inf, empty."""


class ExperimentError(IntsimError):
    """An experiment that cannot run as asked (bad grid or worker count, a folder of another run)."""


class SweepError(ExperimentError):
    """A sweep that cannot run as asked (bad grid, an output folder of another sweep)."""


class PlanError(ExperimentError):
    """A plan file that cannot be used: missing, not JSON, unknown layer or candidate."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is (experiment.tasks.interrupt_on_term), so that it cleans
    up as after Ctrl-C: a golden dump's hidden folder is removed, a sweep's workers are stopped."""
