"""Plots of experiment results (matplotlib, optional: without it the plots are skipped)."""
from pathlib import Path

import numpy as np

import functools

# grid dimensions: QuantConfig field -> option (ints are bit widths, strs are kernel candidates)
INT_DIMS = ("wbits", "abits", "residual_bits", "logit_bits", "gelu_bits", "softmax_bits", "multiplier_bits")
KERNEL_DIMS = ("gelu", "softmax", "layernorm")


@functools.lru_cache(maxsize=1)
def _figure_class():
    """matplotlib's Figure (the object API: no pyplot state, no backend switch for the caller), or
    None without matplotlib; imported on first use, so commands that draw nothing start faster."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def available():
    return _figure_class() is not None


def plot_accuracy(rows, out):
    """accuracy_vs_<dim>.png for every bit-width dimension with more than one value: one line per
    setting of the other varying dimensions (their mean with a min-max band when there are many)."""
    Figure = _figure_class()
    if Figure is None:
        return []
    ok = [r for r in rows if not r.get("error") and r.get("int_top1") not in (None, "")]
    varying = [d for d in INT_DIMS + KERNEL_DIMS + ("overrides",) if len({r[d] for r in ok}) > 1]
    written = []
    for dim in (d for d in varying if d in INT_DIMS):
        others = [d for d in varying if d != dim]
        groups = {}
        for r in ok:
            groups.setdefault(tuple(r[d] for d in others), []).append(r)
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        xs = sorted({int(r[dim]) for r in ok})
        if len(groups) <= 10:
            for key, rs in sorted(groups.items()):
                rs = sorted(rs, key=lambda r: int(r[dim]))
                lab = ", ".join(f"{d}={v}" for d, v in zip(others, key)) or "integer"
                ax.plot([int(r[dim]) for r in rs], [100 * float(r["int_top1"]) for r in rs], "o-", label=lab)
        else:
            ys = [[100 * float(r["int_top1"]) for r in ok if int(r[dim]) == x] for x in xs]
            ax.plot(xs, [np.mean(y) for y in ys], "o-", label=f"mean over {len(groups)} settings")
            ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], alpha=0.25, label="min-max")
        ft = ok[0].get("float_top1")
        if ft not in (None, ""):
            ax.axhline(100 * float(ft), ls="--", c="k", lw=1, label="float")
        ax.set_xlabel(dim)
        ax.set_ylabel("top-1 (%)")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(out) / f"accuracy_vs_{dim}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written



def sqnr_grid(sqnr):
    """Blocks x sub-layers matrix of SQNR values from {tensor: dB} (names blocks.<i>.<sub>)."""
    cells, blocks, subs = {}, set(), []
    for name, db in sqnr.items():
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
            b, sub = int(parts[1]), parts[2]
            cells[(b, sub)] = db
            blocks.add(b)
            if sub not in subs:
                subs.append(sub)
    blocks = sorted(blocks)
    mat = np.full((len(blocks), len(subs)), np.nan)
    for (b, sub), db in cells.items():
        mat[blocks.index(b), subs.index(sub)] = db
    return blocks, subs, mat


def _grid_to_plot(sqnr):
    """(Figure, blocks, sub-layers, matrix with non-finite cells as NaN) of {tensor: dB}, or None
    without matplotlib or without blocks.<i> tensors."""
    Figure = _figure_class()
    blocks, subs, mat = sqnr_grid(sqnr)
    if Figure is None or not blocks:
        return None
    return Figure, blocks, subs, np.where(np.isfinite(mat), mat, np.nan)


def plot_heatmap(sqnr, title, path):
    grid = _grid_to_plot(sqnr)
    if grid is None:
        return None
    Figure, blocks, subs, shown = grid
    fig = Figure(figsize=(1 + 0.55 * len(subs), 1.5 + 0.45 * len(blocks)))
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="viridis", aspect="auto")
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            if np.isfinite(shown[i, j]):
                ax.text(j, i, f"{shown[i, j]:.0f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(subs)), subs, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks], fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="SQNR (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_depth(sqnr, title, path):
    """SQNR over block index, a line per tensor kind (the name after blocks.<i>.), from
    {tensor: dB}; the error's growth through depth. None without matplotlib or blocks."""
    grid = _grid_to_plot(sqnr)
    if grid is None:
        return None
    Figure, blocks, subs, shown = grid
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for j, sub in enumerate(subs):
        ax.plot(blocks, shown[:, j], marker="o", markersize=3, label=sub,
                linestyle=("-", "--", ":")[j // 10 % 3])        # 10 colours, then another dash
    ax.set_xticks(blocks)
    ax.set_xlabel("block")
    ax.set_ylabel("SQNR against float (dB)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
