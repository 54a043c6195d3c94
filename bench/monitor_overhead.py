"""What the training monitors cost: `train()` on the same spec with the default monitors
(sampling every `train.monitor_every` steps, default 50) and with `callbacks=[]`, interleaved
in one process. Prints the training-loop samples/s (median over epochs after the first, from
metrics.jsonl) and the whole `train()` wall time, which also holds the monitors' TensorBoard
writes at epoch end and dashboard.png / filters.png at the end.

    python bench/monitor_overhead.py [--spec specs/digits_cnn.nnspec] [--epochs 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nnc.compiler.shapes import check
from nnc.compiler.spec import load_spec
from nnc.runtime.train import train


def one_run(graph, callbacks) -> tuple[float, float]:
    """(training-loop samples/s, train() wall seconds)."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        train(graph, out, device="cpu", quiet=True, callbacks=callbacks)
        wall = time.perf_counter() - t0
        rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/digits_cnn.nnspec")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    graph = check(load_spec(a.spec, (f"train.epochs={a.epochs}",)))  # digits_cnn's early stop (patience 8) never fires in 8
    one_run(graph, [])  # warm-up: imports, the first backward pass, matplotlib, TensorBoard
    on, off = [], []
    for _ in range(a.repeats):  # interleaved, so drift in the machine hits both sides
        off.append(one_run(graph, []))
        on.append(one_run(graph, None))  # None: the default monitors
    rate = lambda runs: statistics.median(r for r, _ in runs)
    wall = lambda runs: statistics.median(w for _, w in runs)
    print(f"spec {a.spec}, {a.epochs} epochs, monitor_every {graph.spec.train.monitor_every}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"monitors off : {rate(off):8,.0f} samples/s  (runs: {', '.join(f'{r:,.0f}' for r, _ in off)}), "
          f"train() {wall(off):.2f} s")
    print(f"monitors on  : {rate(on):8,.0f} samples/s  (runs: {', '.join(f'{r:,.0f}' for r, _ in on)}), "
          f"train() {wall(on):.2f} s")
    print(f"on / off     : {rate(on) / rate(off):.3f} samples/s (cost {100 * (1 - rate(on) / rate(off)):+.1f}%), "
          f"wall time {100 * (wall(on) / wall(off) - 1):+.1f}%")


if __name__ == "__main__":
    main()
