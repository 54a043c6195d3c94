"""PNG plots of a run, drawn from metrics.jsonl alone (so they can be redrawn later):
loss.png and accuracy.png (`training_curves`), the monitors' dashboard.png (`dashboard`) and
the first-layer filters (`filters`, from the weights); and nnc search's scatter of the metric vs
each hyperparameter (`search_scatter`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

MAX_LEGEND = 8  # more lines than this: colored by depth with a colorbar instead of a legend
MAX_HISTS = 10  # layers in the dashboard's histogram row
STD_FLOOR = 1e-12  # a std of 0 drawn at the bottom of the log axis


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _rows(path: Path) -> list[dict]:
    """Every record of metrics.jsonl; a line cut short by a crash is skipped."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return out


def read_metrics(path: Path) -> list[dict]:
    return [r for r in _rows(path) if "epoch" in r and "train_loss" in r]


def training_curves(metrics: Path, out: Path) -> list[Path]:
    """loss.png (train / val loss per epoch) and accuracy.png (train / val accuracy)."""
    plt = _plt()
    rows = read_metrics(metrics)
    if not rows:
        return []
    ep = [r["epoch"] for r in rows]
    written = []
    for name, keys, ylabel in (("loss", ("train_loss", "val_loss"), "loss"),
                               ("accuracy", ("train_accuracy", "val_accuracy"), "accuracy")):
        if all(r.get(keys[0]) is None for r in rows):
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for k in keys:
            pts = [(e, r[k]) for e, r in zip(ep, rows) if r.get(k) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=k.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if name == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"{name}.png"
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------- dashboard.png


def _ok(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _spread(items: list, k: int) -> list:
    """At most k items, evenly spread, first and last kept."""
    if len(items) <= k:
        return list(items)
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def _log_axis(ax) -> bool:
    """A log y axis with readable ticks where the lines span more than a decade; linear where
    they do not (a log axis over 0.98 .. 1.0 only crowds the labels). Returns whether it is log."""
    from matplotlib.ticker import LogLocator, NullLocator

    ys = [y for line in ax.lines for y in line.get_ydata() if _ok(y) and y > 0]
    if not ys or max(ys) <= 10 * min(ys):
        return False
    ax.set_yscale("log")
    decades = math.log10(max(ys) / min(ys))
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if decades < 3 else (1,)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter("{x:g}" if decades < 3 else "{x:.0e}")
    return True


def _loss_panel(ax, epochs: list[dict], samples: list[dict]) -> None:
    spe = epochs[0]["step"] / epochs[0]["epoch"] if epochs and epochs[0].get("step") else None
    pts = [(r["step"] / spe if spe else r["step"], r["loss"]) for r in samples if _ok(r.get("loss")) and r["loss"] > 0]
    if pts:
        ax.plot(*zip(*pts), ".", ms=3, color="0.6", label="sampled steps")
    for k in ("train_loss", "val_loss"):
        p = [(r["epoch"], r[k]) for r in epochs if _ok(r.get(k)) and r[k] > 0]
        if p:
            ax.plot(*zip(*p), marker="o", ms=3, label=k.replace("_", " "))
    ax.set(title="loss", xlabel="epoch" if spe or not samples else "step")
    _log_axis(ax)


def _accuracy_panel(ax, epochs: list[dict]) -> None:
    for k in ("train_accuracy", "val_accuracy"):
        p = [(r["epoch"], r[k]) for r in epochs if _ok(r.get(k))]
        if p:
            ax.plot(*zip(*p), marker="o", ms=3, label=k.replace("_", " "))
    ax.set(title="accuracy", xlabel="epoch")


def _depth_lines(fig, ax, lines: list[tuple[str, list, list]], cmap_name: str = "viridis") -> None:
    """One line per (label, x, y); a legend for a few, else colors by depth and a colorbar."""
    import matplotlib as mpl

    cmap = mpl.colormaps[cmap_name]
    many = len(lines) > MAX_LEGEND
    for i, (label, x, y) in enumerate(lines):
        color = cmap(i / max(len(lines) - 1, 1) * 0.9) if many else None
        ax.plot(x, y, lw=1, color=color, label=None if many else label)
    if many:
        sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(0, len(lines) - 1))
        cb = fig.colorbar(sm, ax=ax, pad=0.01, fraction=0.05)
        cb.set_ticks([0, len(lines) - 1])
        cb.set_ticklabels([lines[0][0].rsplit(".", 1)[0], lines[-1][0].rsplit(".", 1)[0]], fontsize=7)
        cb.set_label("layer (first to last)", fontsize=7)


def _ratio_panel(fig, ax, samples: list[dict]) -> None:
    rows = [r for r in samples if "update_ratio" in r]
    names = [n for n in (rows[-1]["update_ratio"] if rows else {})
             if n.rsplit(".", 1)[-1].startswith("weight")]  # recurrent layers: weight_ih_l0, weight_hh_l0, ...
    lines = []
    for n in names:
        pts = [(r["step"], r["update_ratio"][n]) for r in rows if _ok(r["update_ratio"].get(n)) and r["update_ratio"][n] > 0]
        if pts:
            lines.append((n, *zip(*pts)))
    _depth_lines(fig, ax, lines)
    ax.axhline(1e-3, color="gray", ls="--", lw=1)
    ax.text(0.01, 1e-3, " 1e-3", color="gray", fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
    ys = [v for _, _, values in lines for v in values] + [1e-3]
    ax.set_ylim(min(ys) / 3, max(ys) * 3)  # the 1e-3 line always in view
    ax.set(title="update / weight ratio (weights)", xlabel="step", yscale="log")


def _act_layers(samples: list[dict]) -> list[str]:
    """The layers the activation panels show: the nonlinearities' outputs (the notes' plot), or
    every monitored layer of a net without any."""
    rows = [r for r in samples if "activations" in r]
    if not rows:
        return []
    acts = rows[-1]["activations"]
    nonlin = [p for p, s in acts.items() if "dead" in s or "saturated" in s]
    hist = set(next((r["act_hist"] for r in reversed(samples) if "act_hist" in r), {}))
    return [p for p in acts if p in hist or p in nonlin] or list(acts)


def _std_panel(ax, samples: list[dict], layers: list[str]) -> None:
    """The notes' plot: activation std per layer (log) vs depth, a few lines early to late."""
    import matplotlib as mpl

    rows = _spread([r for r in samples if "activations" in r], 4)
    cmap = mpl.colormaps["viridis"]
    x = list(range(1, len(layers) + 1))
    for i, r in enumerate(rows):
        y = [max(r["activations"].get(p, {}).get("std", math.nan), STD_FLOOR) for p in layers]
        ax.plot(x, y, marker="o", ms=3, color=cmap(i / max(len(rows) - 1, 1) * 0.85),
                label=f"step {r['step']} (epoch {r['epoch']})")
    log = _log_axis(ax)
    ax.set(title="activation std per layer" + (" (log scale)" if log else ""), xlabel="layer")
    ax.set_xticks(x)
    ax.set_xticklabels(layers if len(layers) <= 16 else [p if i % math.ceil(len(layers) / 16) == 0 else ""
                                                           for i, p in enumerate(layers)],
                       rotation=45 if len(layers) > 6 else 0, ha="right" if len(layers) > 6 else "center", fontsize=7)


def _units_panel(ax, samples: list[dict], layers: list[str]) -> None:
    rows = [r for r in samples if "activations" in r]
    if not rows:
        return
    x = list(range(1, len(layers) + 1))
    for r, style in ((rows[0], "--"), (rows[-1], "-")):
        for key, color in (("dead", "tab:red"), ("saturated", "tab:purple")):
            y = [r["activations"].get(p, {}).get(key, math.nan) for p in layers]
            if any(_ok(v) for v in y):
                ax.plot(x, y, style, marker="o", ms=3, color=color, label=f"{key}, step {r['step']}")
    ax.set(title="dead ReLUs / saturated units", xlabel="layer", ylim=(-0.03, 1.03))
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in x], fontsize=7)


def _hist_row(fig, cell, samples: list[dict], layers: list[str]) -> None:
    """The notes' figure: one small histogram of the activations per layer, at the first
    sample (filled) and the last one (line)."""
    hists = [r for r in samples if "act_hist" in r]
    if not hists:
        return
    first, last = hists[0], hists[-1]
    shown = _spread([p for p in layers if p in last["act_hist"]], MAX_HISTS)
    if not shown:
        return
    grid = cell.subgridspec(1, max(len(shown), 5), wspace=0.35)
    bbox = cell.get_position(fig)
    fig.text(bbox.x0, bbox.y1 + 0.06, f"activations per layer: step {first['step']} (blue, filled) and step "
             f"{last['step']} (orange line)" + ("; ReLUs: the nonzero part" if any("zero" in h for h in last["act_hist"].values())
                                              else ""), fontsize=9)
    for i, p in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        for r, kw in ((first, {"fill": True, "alpha": 0.45, "color": "tab:blue"}),
                      (last, {"fill": False, "color": "tab:orange", "lw": 1.2})):
            h = r["act_hist"].get(p)
            if not h or not sum(h["counts"]):
                continue
            n, total = len(h["counts"]), sum(h["counts"]) / (1 - h.get("zero", 0.0))
            edges = [h["lo"] + (h["hi"] - h["lo"]) * j / n for j in range(n + 1)]
            ax.stairs([c / total for c in h["counts"]], edges, label=f"step {r['step']}", **kw)
        std0 = first.get("activations", {}).get(p, {}).get("std")
        std1 = last.get("activations", {}).get(p, {}).get("std")
        sub = f"σ {std0:.1e}" + (f"→{std1:.1e}" if last is not first and _ok(std1) else "") if _ok(std0) else ""
        zero = last["act_hist"][p].get("zero")
        ax.set_title(f"{p}\n{sub}" + (f"\n{100 * zero:.0f}% zeros" if zero is not None else ""), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])


def dashboard(metrics, path) -> None:
    """The monitors' picture. Top: loss, accuracy, update / weight ratios. Middle: activation
    std vs layer (log, the notes' deep-tanh plot) early to late, dead / saturated fractions
    per layer. Bottom: a histogram of each layer's activations, first and last sample. Copes
    with a run that stopped in its first step (only what was recorded is drawn)."""
    plt = _plt()
    rows = _rows(Path(metrics))
    epochs = [r for r in rows if "train_loss" in r and "epoch" in r]
    samples = [r for r in rows if r.get("monitor") == "step"]
    layers = _act_layers(samples)
    fig = plt.figure(figsize=(15, 11.5), dpi=90)
    gs = fig.add_gridspec(3, 3, height_ratios=(1, 1.1, 0.75), left=0.06, right=0.97, bottom=0.04, top=0.96,
                          wspace=0.22, hspace=0.6)
    axes = [fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[0, 2]),
            fig.add_subplot(gs[1, :2]), fig.add_subplot(gs[1, 2])]
    _loss_panel(axes[0], epochs, samples)
    _accuracy_panel(axes[1], epochs)
    _ratio_panel(fig, axes[2], samples)
    if layers:
        _std_panel(axes[3], samples, layers)
        _units_panel(axes[4], samples, layers)
    else:
        for a, title in ((axes[3], "activation std per layer"), (axes[4], "dead ReLUs / saturated units")):
            a.set_title(title)
            a.text(0.5, 0.5, "no monitor samples recorded", ha="center", va="center", transform=a.transAxes, color="gray")
    _hist_row(fig, gs[2, :], samples, layers)
    for a in axes:
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0] and a.get_legend() is None:
            a.legend(fontsize=7)
    _save(fig, path)  # tight_layout: +0.8 s
    plt.close(fig)


def filters(w, path) -> None:
    """First-layer filters (O, C, k, k) as one mosaic, each filter scaled to [0, 1] on its own;
    RGB when C == 3, else channel 0 in gray. `w`: a numpy array (or anything numpy reads)."""
    import numpy as np

    plt = _plt()
    w = np.asarray(w, dtype=np.float32)
    o, c, kh, kw = w.shape
    cols = math.ceil(math.sqrt(o))
    rows = math.ceil(o / cols)
    f = w if c == 3 else w[:, :1]
    lo = f.min(axis=(1, 2, 3), keepdims=True)
    f = (f - lo) / (f.max(axis=(1, 2, 3), keepdims=True) - lo + 1e-12)
    grid = np.ones((f.shape[1], rows * (kh + 1) + 1, cols * (kw + 1) + 1), np.float32)  # 1-pixel white borders
    for i in range(o):
        r, q = divmod(i, cols)
        grid[:, 1 + r * (kh + 1):1 + r * (kh + 1) + kh, 1 + q * (kw + 1):1 + q * (kw + 1) + kw] = f[i]
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[1] / grid.shape[2]), dpi=90)
    ax.imshow(grid.transpose(1, 2, 0) if c == 3 else grid[0], cmap=None if c == 3 else "gray",
              interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title(f"first-layer filters ({o} x {c} x {kh} x {kw})")
    _save(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------- a run's pictures, now or in the background


def _save(fig, path) -> None:
    """Written under a temporary name and renamed: a picture drawn in the background is never
    seen half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp)
    os.replace(tmp, path)


def run_pictures(out: Path, classify: bool, dashboard_: bool, filters_of: str | None) -> list[Path]:
    """The pictures `draw_run` makes for a run directory, named before they are drawn."""
    names = ["loss.png"] + ["accuracy.png"] * classify + ["dashboard.png"] * dashboard_ + ["filters.png"] * bool(filters_of)
    return [Path(out) / n for n in names]


def draw_run(out: Path, dashboard_: bool, filters_of: str | None) -> list[Path]:
    """Every end-of-run picture of the run directory `out`, from its files alone: the curves from
    metrics.jsonl, the monitors' dashboard, and the filters of the tensor `filters_of` (e.g.
    `conv1.weight`) as the best checkpoint holds it (the last one when there is no best yet)."""
    out = Path(out)
    drawn = training_curves(out / "metrics.jsonl", out)
    if dashboard_:
        dashboard(out / "metrics.jsonl", out / "dashboard.png")
        drawn.append(out / "dashboard.png")
    ck = next((out / f for f in ("best.safetensors", "last.safetensors") if (out / f).is_file()), None)
    if filters_of and ck is not None:
        from safetensors import safe_open

        with safe_open(str(ck), framework="numpy") as f:
            filters(f.get_tensor(f"model/{filters_of}"), out / "filters.png")
        drawn.append(out / "filters.png")
    return drawn


def draw_in_background(out: Path, dashboard_: bool, filters_of: str | None) -> None:
    """`draw_run` in a detached process (`python -m nnc.runtime.plots`), so that the command's
    exit does not wait for matplotlib (~1.5 s here). A failure is written to OUT/plots.log."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "nnc.runtime.plots", str(out)] + ["--dashboard"] * dashboard_ \
        + (["--filters", filters_of] if filters_of else [])
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)


def end_pictures(out: Path, graph, callbacks: list, mode: str = "wait") -> list[Path]:
    """A run's end-of-run pictures: drawn before returning ("wait"), by a detached process while
    the command exits ("background"), or not at all ("off"; `nnc plot RUN` draws them later).
    The dashboard and the first layer's filters when a callback asked for pictures (the monitors)."""
    from nnc.compiler.layers import LAYERS
    from nnc.compiler.vocab.losses import LOSSES

    if mode == "off":
        return []
    dash = any(getattr(cb, "pictures", False) for cb in callbacks)
    first = next((l for l in graph.layers() if l.tensors), None)
    filters_of = f"{first.path}.weight" if dash and first is not None and LAYERS[first.kind].filters else None
    if mode == "background":
        draw_in_background(out, dash, filters_of)
        return run_pictures(out, LOSSES[graph.spec.loss.kind].classification, dash, filters_of)
    return draw_run(out, dash, filters_of)


def redraw(out: Path) -> list[Path]:
    """`nnc plot RUN`: a run directory's pictures drawn again (or for the first time, after
    `nnc train --plots off`), deciding from its files what the run would have drawn: the dashboard
    when metrics.jsonl holds monitor records, the filters when the spec's first layer has them."""
    import json

    from safetensors import safe_open

    from nnc.compiler.checks import check
    from nnc.compiler.layers import LAYERS
    from nnc.compiler.load import load_text
    from nnc.diagnostics import NncError

    out = Path(out)
    ck = next((out / f for f in ("best.safetensors", "last.safetensors") if (out / f).is_file()), None)
    if ck is None or not (out / "metrics.jsonl").is_file():
        raise NncError(f"{out}: not a run directory (it needs metrics.jsonl and a checkpoint, as `nnc train` writes)")
    try:
        with safe_open(str(ck), framework="numpy") as f:
            meta = f.metadata() or {}
        graph = check(load_text(meta["spec_text"], meta["spec_name"], tuple(json.loads(meta.get("overrides", "[]")))))
    except (OSError, KeyError, ValueError) as e:
        raise NncError(f"{ck}: cannot read the run's spec from it ({e})") from None
    dash = any(r.get("monitor") == "step" for r in _rows(out / "metrics.jsonl"))
    first = next((l for l in graph.layers() if l.tensors), None)
    filters_of = f"{first.path}.weight" if dash and first is not None and LAYERS[first.kind].filters else None
    return draw_run(out, dash, filters_of)


def _main(argv: list[str]) -> int:
    import argparse
    import traceback

    ap = argparse.ArgumentParser(prog="python -m nnc.runtime.plots", description="draw a run directory's pictures")
    ap.add_argument("out")
    ap.add_argument("--dashboard", action="store_true")
    ap.add_argument("--filters", metavar="TENSOR")
    a = ap.parse_args(argv)
    try:
        draw_run(Path(a.out), a.dashboard, a.filters)
    except Exception:  # nobody waits on this process: leave the reason beside the pictures
        with contextlib.suppress(OSError):
            (Path(a.out) / "plots.log").write_text(traceback.format_exc())
        return 1
    return 0


PANELS_PER_ROW = 4


def exploded_y(seen: list[float]) -> float:
    """Where exploded trials (no value) are drawn: a strip just below the lowest value, so
    they never cover a real point."""
    if not seen:
        return 0.0
    lo, hi = min(seen), max(seen)
    return lo - 0.08 * ((hi - lo) or abs(lo) or 1.0)


def search_scatter(trials: list[dict], ranges: list, metric: str, path: Path) -> Path:
    """Metric vs each hyperparameter, one panel each (log x-axis for log ranges), at most four
    panels per row: completed trials as dots by stage, pruned ones at their last reported value
    as crosses, exploded ones as red triangles on a strip below the lowest value."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from nnc.compiler.values import format_value

    seen = [v for v in (r["value"] if r["value"] is not None else r["last"] for r in trials) if v is not None]
    floor = exploded_y(seen)
    ncols = min(PANELS_PER_ROW, len(ranges))
    nrows = math.ceil(len(ranges) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.8 * nrows + 0.4), dpi=80, layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[len(ranges):]:
        ax.set_visible(False)
    colors = {"coarse": "tab:blue", "fine": "tab:orange"}
    for ax, r in zip(grid, ranges):
        for row in trials:
            if r.path not in row["params"]:
                continue
            x = row["params"][r.path]
            x = r.args.index(x) if r.dist == "choice" else x
            if row["value"] is not None:
                ax.scatter([x], [row["value"]], s=18, color=colors.get(row["stage"], "tab:green"))
            elif row["state"] == "exploded":
                ax.scatter([x], [floor], s=22, marker="v", color="tab:red")
            elif row["last"] is not None and row["state"] == "pruned":
                ax.scatter([x], [row["last"]], s=18, marker="x", color="tab:gray")
        if seen:
            ax.axhline((floor + min(seen)) / 2, color="tab:red", lw=0.5, ls=":", alpha=0.5)
        if r.log:
            ax.set_xscale("log")
        if r.dist == "choice":
            ax.set_xticks(range(len(r.args)), [format_value(a) for a in r.args])
        else:
            ax.set_xlim(*_padded(r))
        ax.set_xlabel(f"{r.path} ({r.dist})")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="", marker=m, color=c, label=l)
               for l, m, c in (("coarse", "o", colors["coarse"]), ("fine", "o", colors["fine"]),
                               ("pruned (last value)", "x", "tab:gray"),
                               ("exploded (below the lowest value)", "v", "tab:red"))]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=min(len(handles), 2 * ncols),
               frameon=False)
    fig.savefig(path)
    return path


def _padded(r) -> tuple[float, float]:
    lo, hi = r.args
    if r.log:
        return lo / 10 ** (0.05 * math.log10(hi / lo)), hi * 10 ** (0.05 * math.log10(hi / lo))
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


if __name__ == "__main__":
    raise SystemExit(_main(__import__("sys").argv[1:]))
