"""nnc's training overhead: the same model, data and optimizer trained by `nnc train`'s loop
and by a hand-written PyTorch loop, side by side in one process. Prints samples/s and the ratio.

    python bench/train_overhead.py [--spec specs/digits_cnn.nnspec] [--epochs 6] [--repeats 3]

The hand-written side is the fast one a practitioner would write: the data set sits in memory
as tensors and is batched by slicing (no per-sample DataLoader), conv nets in channels_last as
nnc trains them; it reads loss.item() per step.
Both sides train in float32 on the CPU, or with bf16 autocast with --device cuda; the first epoch of each
run is a warm-up and is not counted.
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
from nnc.compiler.torch_build import build_model
from nnc.runtime import preprocess
from nnc.runtime.data import load_splits
from nnc.runtime.train import train


def hand_written(graph, epochs: int, device: str) -> float:
    """A plain PyTorch loop over the same model (built from the same spec), data and optimizer."""
    spec = graph.spec
    splits = load_splits(graph)
    steps = [(c.kind, c.params) for c in spec.data.preprocess]
    stats = preprocess.fit(steps, splits.train.x)
    x = torch.as_tensor(preprocess.apply(stats, splits.train.x)).to(device)
    y = torch.as_tensor(splits.train.y).to(device)
    torch.manual_seed(0)
    model = build_model(graph).to(device)
    if any(l.kind == "conv" for l in graph.layers()):  # what a practitioner (and nnc) does for conv nets
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=spec.optimizer.params.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    batch, n = spec.train.batch, len(x)
    rates = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, torch.bfloat16, enabled=device == "cuda"):  # nnc's precision on GPUs
                scores = model(x[idx])
            loss = loss_fn(scores.float(), y[idx])
            loss.backward()
            opt.step()
            loss.item()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates[1:])


def nnc_loop(graph, epochs: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        train(graph, out, device=device, quiet=True)
        rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([r["samples_per_s"] for r in rows if "samples_per_s" in r][1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/digits_cnn.nnspec")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    # Same optimizer on both sides: plain Adam at a constant rate, no L2, no early stop; nnc's
    # monitors are off here (bench/monitor_overhead.py measures them).
    spec = load_spec(a.spec, (f"train.epochs={a.epochs}", "regularize.l2=0", "train.monitor_every=0",
                              "schedule=constant", f"optimizer=adam(lr={load_spec(a.spec).optimizer.params.lr})"))
    graph = check(spec)
    nnc_rates, hand_rates = [], []
    for _ in range(a.repeats):  # interleaved, so drift in the machine hits both sides
        nnc_rates.append(nnc_loop(graph, a.epochs, a.device))
        hand_rates.append(hand_written(graph, a.epochs, a.device))
    n, h = statistics.median(nnc_rates), statistics.median(hand_rates)
    print(f"spec {a.spec}, device {a.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"hand-written loop : {h:10,.0f} samples/s  (runs: {', '.join(f'{r:,.0f}' for r in hand_rates)})")
    print(f"nnc train loop    : {n:10,.0f} samples/s  (runs: {', '.join(f'{r:,.0f}' for r in nnc_rates)})")
    print(f"nnc / hand-written: {n / h:.3f}  (overhead {100 * (1 - n / h):+.1f}%)")


if __name__ == "__main__":
    main()
