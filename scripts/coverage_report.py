"""Regenerate the coverage tables of docs/conformance.md (the conformance set, seed 0, and the
committed golden sets). Each table sits between `<!-- coverage:NAME -->` and `<!-- /coverage:NAME -->`.

    python scripts/coverage_report.py            rewrite the tables in docs/conformance.md
    python scripts/coverage_report.py --check    exit 1 if a table is stale

tests/test_conformance.py checks that the committed tables are current.
"""
import argparse
from pathlib import Path
import re
import sys
import tempfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from intsim import conformance, coverage  # noqa: E402

DOC = ROOT / "docs" / "conformance.md"
GOLDEN_SETS = [ROOT / "golden" / "fmnist_w8a8", ROOT / "golden" / "fmnist_w4a8"]


def table(cov):
    lines = ["| section | kernel | ops | bins hit | missed bins |", "|---|---|---|---|---|"]
    for s in coverage.BINS:
        n_all, miss = len(coverage.all_bins(s)), cov.missed(s)
        ops = cov.ops.get(s, 0)
        missed = "(not in this set)" if not ops else (coverage.compress(miss) if miss else "none")
        lines.append(f"| {s} | {coverage.SECTION_KERNEL[s]} | {ops} | {n_all - len(miss)} / {n_all} | {missed} |")
    total = sum(len(coverage.all_bins(s)) for s in coverage.BINS)
    hit = total - sum(len(cov.missed(s)) for s in coverage.BINS)
    lines.append(f"| all | | {sum(cov.ops.values())} | {hit} / {total} | |")
    return "\n".join(lines)


def tables(golden_sets=GOLDEN_SETS, conformance_dir=None):
    """{name: markdown table}; the conformance set (seed 0) is written to a temporary directory
    unless conformance_dir is given."""
    out = {}
    if conformance_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            conformance.write_conformance(Path(tmp) / "c", seed=0)
            out["conformance"] = table(coverage.coverage(Path(tmp) / "c"))
    else:
        out["conformance"] = table(coverage.coverage(conformance_dir))
    for path in golden_sets:
        out[Path(path).name] = table(coverage.coverage(path))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    doc = DOC.read_text()
    new = doc
    for name, t in tables().items():
        pat = re.compile(rf"(<!-- coverage:{re.escape(name)} -->\n).*?(\n<!-- /coverage:{re.escape(name)} -->)", re.S)
        if not pat.search(new):
            sys.exit(f"{DOC}: no <!-- coverage:{name} --> block")
        new = pat.sub(lambda m: m.group(1) + t + m.group(2), new)
    if a.check:
        if new != doc:
            sys.exit(f"{DOC}: coverage tables are stale; run python scripts/coverage_report.py")
        print("coverage tables current")
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
