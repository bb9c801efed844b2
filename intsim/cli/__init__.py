"""The `intsim` command line: the top layer (main.py dispatches to one module per command)."""
from .commands import main

__all__ = ["main"]
