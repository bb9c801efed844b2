"""The importer's exceptions: the public OnnxImportError and the matchers' internal misses.

A matcher that does not match raises one of three misses, which tell the error report where the
cause of an unimported model most likely is (see patterns/report.py):
    NotHere   the anchor node does not start this pattern (its opening test failed);
    Upstream  an input of the pattern was not recognised by another pattern (a symptom);
    Broken    the anchor starts this pattern, but it breaks further on (a likely cause).
"""
from ..errors import IntsimError


class OnnxImportError(IntsimError):
    """The ONNX model cannot be imported: unreadable, unsupported op or pattern, bad input."""


class Miss(Exception):
    """Internal: a pattern does not match at its anchor node; the message says why."""


class NotHere(Miss):
    """The anchor does not start this pattern at all."""


class Upstream(Miss):
    """An input of the pattern is not the output of a recognised pattern."""


class Broken(Miss):
    """The anchor starts this pattern, but the pattern breaks further on."""


def applies(cond, reason):
    """The pattern's opening test at its anchor: without it the pattern is simply not here."""
    if not cond:
        raise NotHere(reason)


def need(cond, reason):
    """A requirement after the opening test: failing it means the expected pattern is broken."""
    if not cond:
        raise Broken(reason)
