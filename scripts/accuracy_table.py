"""The accuracy tables of docs/results.md: the shipped Fashion-MNIST ViT on the full 10k test set.

    python scripts/accuracy_table.py [--limit N] [--calib 256]

Rows: W8A8 and W4A8 with the default kernels, then every GELU x Softmax candidate pair at W8A8
(LayerNorm at its default). Each row is one `intsim run` configuration, e.g.
`intsim run --wbits 4` or `intsim run --gelu ibert-gelu --softmax ivit-shiftmax`; calibration is
the same 256 training images for every row.
"""
import argparse
import itertools

import intsim.pipeline as ip
from intsim.kernels import candidates


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--calib", type=int, default=256)
    a = p.parse_args()
    graph = ip.load()
    data = ip.open_data("fashion-mnist")
    observers = ip.calibrate(graph, data.calibration(a.calib), gram=True)    # weights round with GPTQ
    images, labels = data.evaluation(a.limit)
    rows = [("W8A8", {}), ("W4A8", {"wbits": 4})]
    for g, s in itertools.product(candidates("gelu"), candidates("softmax")):
        rows.append((f"W8A8 {g} + {s}", {"gelu": g, "softmax": s}))
    print(f"Fashion-MNIST test set, {len(images)} images; calibration {a.calib} training images.\n")
    print("| configuration | float top-1 | integer top-1 | drop (%p) | agreement | logit SQNR (dB) | images/s |")
    print("|---|---|---|---|---|---|---|")
    for label, settings in rows:
        program = ip.compile(graph, observers, ip.QuantConfig(**settings))
        r = ip.evaluate(graph, program, images, labels, progress=False)
        print(f"| {label} | {100 * r['float_top1']:.2f} | {100 * r['int_top1']:.2f} | "
              f"{100 * (r['float_top1'] - r['int_top1']):+.2f} | {100 * r['agreement']:.2f} | "
              f"{r['logit_sqnr_db']:.1f} | {r['images_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
