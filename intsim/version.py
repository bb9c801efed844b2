"""The package version (one place; the package face and program metadata read it)."""
__version__ = "0.1.0"
