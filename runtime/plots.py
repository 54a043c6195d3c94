"""PNG plots of a run, drawn from metrics.jsonl alone (so they can be redrawn later)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    with open(path) as f:
        return [r for r in map(json.loads, f) if "epoch" in r and "train_loss" in r]


def training_curves(metrics: Path, out: Path) -> list[Path]:
    """loss.png (train / val loss per epoch) and accuracy.png (train / val accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
