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


def plot_accuracy(rows, out, what="integer top-1"):
    """accuracy_vs_<dim>.png for every bit-width dimension with more than one value: one line per
    setting of the other varying dimensions (their mean with a min-max band when there are many),
    each point with its binomial standard error over the images (sqrt(p (1 - p) / n)), so that a
    difference within the noise of the image count shows as such. what: the title's subject
    (model, data)."""
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
        images = int(ok[0].get("images") or 0)
        if len(groups) <= 10:
            for key, rs in sorted(groups.items()):
                rs = sorted(rs, key=lambda r: int(r[dim]))
                lab = ", ".join(f"{d}={v}" for d, v in zip(others, key)) or "integer"
                p = np.array([float(r["int_top1"]) for r in rs])
                err = 100 * np.sqrt(p * (1 - p) / images) if images else None
                ax.errorbar([int(r[dim]) for r in rs], 100 * p, yerr=err, fmt="o-", capsize=3, label=lab)
        else:
            ys = [[100 * float(r["int_top1"]) for r in ok if int(r[dim]) == x] for x in xs]
            ax.plot(xs, [np.mean(y) for y in ys], "o-", label=f"mean over {len(groups)} settings")
            ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], alpha=0.25, label="min-max")
        ft = ok[0].get("float_top1")
        if ft not in (None, ""):
            ax.axhline(100 * float(ft), ls="--", c="k", lw=1, label="float")
        ax.set_xlabel(dim)
        ax.set_ylabel("top-1 (%)" + (f", +- 1 s.e. over {images} images" if images else ""))
        ax.set_title(f"{what}: top-1 against {dim}", fontsize=9)
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, Path(out) / f"accuracy_vs_{dim}.png"))
    return written



def block_stack(names):
    """The repeated stack of a model's tensor names (`blocks` in blocks.3.mlp.fc1, `backbone.encoder.layer`
    in backbone.encoder.layer.3.attention.output.dense): the dotted prefix before the first number
    that most names share, or None when no name has a numbered part."""
    counts = {}
    for name in names:
        parts = name.split(".")
        i = next((i for i, part in enumerate(parts[1:-1], 1) if part.isdigit()), None)
        if i is not None:
            stack = ".".join(parts[:i])
            counts[stack] = counts.get(stack, 0) + 1
    return max(counts, key=counts.get) if counts else None


def sqnr_grid(sqnr):
    """Blocks x sub-layers matrix of SQNR values from {tensor: dB}: the tensors of the model's block
    stack (`block_stack`: <stack>.<i>.<sub>), the others left out."""
    stack = block_stack(sqnr)
    cells, blocks, subs = {}, set(), []
    prefix = f"{stack}."
    for name, db in sqnr.items():
        if stack is None or not name.startswith(prefix):
            continue
        index, _, sub = name[len(prefix):].partition(".")
        if index.isdigit() and sub:
            b = int(index)
            cells[(b, sub)] = db
            blocks.add(b)
            if sub not in subs:
                subs.append(sub)
    blocks = sorted(blocks)
    mat = np.full((len(blocks), len(subs)), np.nan)
    for (b, sub), db in cells.items():
        mat[blocks.index(b), subs.index(sub)] = db
    return blocks, subs, mat


def check_image_path(path, option):
    """A one-line reason why `path` cannot be a plot file (no matplotlib, a format matplotlib does
    not write), or None."""
    Figure = _figure_class()
    if Figure is None:
        return f"{option} needs matplotlib (pip install matplotlib)"
    formats = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        return (f"{option} {path}: {'no file extension' if not suffix else f'.{suffix} is not an image format'}; "
                f"use one of {', '.join('.' + f for f in sorted(formats))}")
    return None


def _save(fig, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


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
    return _save(fig, path)


def plot_depth(sqnr, title, path, kinds=None):
    """SQNR over block index from {tensor: dB}: the error's growth through depth, one small panel
    per op kind (`kinds`: {tensor: op kind}; one panel without it) with a line per tensor of that
    kind in a block (the name after <stack>.<i>.), so no panel has more lines than it can tell
    apart. A model without a numbered block stack: every tensor in execution order. None without
    matplotlib."""
    grid = _grid_to_plot(sqnr)
    if grid is None:
        return None if _figure_class() is None else _plot_sequence(sqnr, title, path)
    Figure, blocks, subs, shown = grid
    stack = block_stack(sqnr)
    kind_of = {sub: (kinds or {}).get(f"{stack}.{blocks[0]}.{sub}") or
               next(((kinds or {}).get(f"{stack}.{b}.{sub}") for b in blocks
                     if (kinds or {}).get(f"{stack}.{b}.{sub}")), "tensor") for sub in subs}
    panels = list(dict.fromkeys(kind_of[sub] for sub in subs))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 2.9 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, kind in zip(axes, panels):
        for j, sub in enumerate(s for s in subs if kind_of[s] == kind):
            col = subs.index(sub)
            ax.plot(blocks, shown[:, col], marker="o", markersize=2.5, lw=1.2, label=sub,
                    linestyle=("-", "--", ":")[j // 10 % 3])
        ax.set_title(kind, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols:]:
        ax.set_xlabel(f"block ({stack}.<i>)", fontsize=8)
    for ax in axes[::cols]:
        ax.set_ylabel("SQNR vs float (dB)", fontsize=8)
    axes[0].set_xticks(blocks)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _plot_sequence(sqnr, title, path):
    """SQNR of every tensor in execution order (a model whose names have no numbered blocks)."""
    names = list(sqnr)
    values = np.array([sqnr[n] for n in names], dtype=float)
    fig = _figure_class()(figsize=(8, 5))
    ax = fig.subplots()
    ax.plot(range(len(names)), np.where(np.isfinite(values), values, np.nan), marker="o", markersize=3)
    step = max(1, len(names) // 30)
    ax.set_xticks(range(0, len(names), step), names[::step], rotation=75, ha="right", fontsize=6)
    ax.set_xlabel("tensor, in execution order")
    ax.set_ylabel("SQNR against float (dB)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
