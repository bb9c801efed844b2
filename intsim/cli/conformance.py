"""`intsim conformance` (write the conformance vectors) and `intsim coverage` (the spec coverage
bins a dump hits), docs/conformance.md."""
import json

from .. import golden
from ..conformance import KERNELS, write_conformance
from ..coverage import coverage
from .args import Parser


def conformance_main(argv):
    p = Parser(
        prog="intsim conformance", description="Write the conformance vectors: for every kernel and "
        "candidate, directed corner cases and seeded random vectors computed by intsim's reference "
        "path, in the golden dump format (one op per kernel and case; docs/conformance.md).")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--format", default="npy", help="comma list of npy, bin, hex (default npy)")
    p.add_argument("--pack", type=int, default=1, help="elements per .hex word (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random vectors (default 0)")
    p.add_argument("--kernels", default=None,
                   help=f"comma list of kernels (default all): {', '.join(KERNELS)}")
    p.add_argument("--force", action="store_true", help="replace an existing dump")
    a = p.parse_args(argv)
    if not a.out.strip():
        p.error("--out: an empty path; name the folder to write (it must not exist unless --force)")
    kernels = [k.strip() for k in a.kernels.split(",") if k.strip()] if a.kernels else None
    manifest = write_conformance(a.out, golden.check_formats(a.format), a.seed, kernels, a.pack, a.force)
    print(f"wrote {a.out}: {len(manifest['ops'])} cases, {len(manifest['tensors'])} tensors, "
          f"{','.join(manifest['formats'])}")
    for k, info in manifest["conformance"]["kernels"].items():
        print(f"  {k:<18} {info['spec']:<5} {info['cases']:>4} cases")
    return 0


def coverage_main(argv):
    p = Parser(
        prog="intsim coverage", description="Functional coverage of a golden-format dump: for each "
        "kernel section of docs/arithmetic.md, the coverage bins its vectors hit and miss, computed "
        "from the dumped inputs and constants. Exit 0 when every bin is hit, 1 otherwise.")
    p.add_argument("dump_dir")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    cov = coverage(a.dump_dir)
    print(json.dumps(cov.to_dict()) if a.json else cov.text())
    return 0 if cov.complete() else 1
