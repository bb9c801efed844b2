"""Progress bars (tqdm), on stderr and only when it is a terminal unless asked otherwise."""
import sys

from tqdm import tqdm


def bar(total, desc, enabled=None, unit="it"):
    """A tqdm bar over `total` steps; enabled=None shows it only on a terminal."""
    show = sys.stderr.isatty() if enabled is None else bool(enabled)
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, file=sys.stderr,
                dynamic_ncols=True, leave=True)
