"""The `intsim coverage` command (docs/conformance.md)."""
import argparse
import json

from .cli import command
from .coverage import coverage


@command("coverage", "report which spec coverage bins a golden or conformance dump hits")
def cmd_coverage(argv):
    p = argparse.ArgumentParser(
        prog="intsim coverage", description="Functional coverage of a golden-format dump: for each "
        "kernel section of docs/arithmetic.md, the coverage bins its vectors hit and miss, computed "
        "from the dumped inputs and constants. Exit 0 when every bin is hit, 1 otherwise.")
    p.add_argument("dump_dir")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    cov = coverage(a.dump_dir)
    print(json.dumps(cov.to_dict()) if a.json else cov.text())
    return 0 if cov.complete() else 1
