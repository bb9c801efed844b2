"""Progress bars (tqdm), on stderr and only when it is a terminal unless asked otherwise."""
import sys

from tqdm import tqdm


# the count as a whole number, so that a bar may move by fractions of a step (bar.advance)
_FORMAT = "{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def bar(total, desc, enabled=None, unit="it"):
    """A tqdm bar over `total` steps; enabled=None shows it only on a terminal."""
    show = sys.stderr.isatty() if enabled is None else bool(enabled)
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, file=sys.stderr,
                dynamic_ncols=True, leave=True, bar_format=_FORMAT)


def advance(b, by, up_to):
    """Move bar b by `by` (a fraction of a step is fine) but not past `up_to`: progress inside one
    long step (a batch through a whole graph) whose count of sub-steps is only estimated."""
    b.update(max(min(by, up_to - b.n), 0))
