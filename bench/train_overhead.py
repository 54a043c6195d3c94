"""nnc's training overhead: the same model, data and optimizer trained by `nnc train`'s loop
and by a hand-written PyTorch loop, side by side in one process. Prints samples/s and the ratio.

    python bench/train_overhead.py [--spec specs/digits_cnn.nnspec] [--epochs 6] [--repeats 3]

Each nnc epoch is followed by one epoch of the hand-written loop (an nnc callback runs it), so
that each pair of epochs meets the same load of a shared machine; the ratio is the median of
the per-epoch ratios. The hand-written side is the fast one a practitioner would write: the data set sits in memory
as tensors and is batched by slicing (no per-sample DataLoader), conv nets in channels_last as
nnc trains them; it reads loss.item() per step.
Both sides train in float32 on the CPU, or with bf16 autocast with --device cuda; the first epoch of each
run is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec
from nnc.compiler.torch_module import build_model
from nnc.runtime import preprocess
from nnc.runtime.data import load_splits
from nnc.runtime.train import train


class HandWritten:
    """A plain PyTorch loop over the same model (built from the same spec), data and optimizer,
    one epoch per call."""

    def __init__(self, graph, device: str):
        spec = graph.spec
        splits = load_splits(graph)
        steps = [(c.kind, c.params) for c in spec.data.preprocess]
        stats = preprocess.fit(steps, splits.train.x)
        self.x = torch.as_tensor(preprocess.apply(stats, splits.train.x)).to(device)
        self.y = torch.as_tensor(splits.train.y).to(device)
        torch.manual_seed(0)
        self.model = build_model(graph).to(device)
        if any(l.kind == "conv" for l in graph.layers()):  # what a practitioner (and nnc) does for conv nets
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=spec.optimizer.params.lr)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.batch, self.device = spec.train.batch, device
        # nnc's precision: bf16 autocast on GPUs, plain float32 on the CPU
        self.precision = (lambda: torch.autocast(device, torch.bfloat16)) if device == "cuda" else contextlib.nullcontext

    def epoch(self) -> float:
        x, y, model, opt, n = self.x, self.y, self.model, self.opt, len(self.x)
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=self.device)
        for i in range(0, n, self.batch):
            idx = perm[i:i + self.batch]
            opt.zero_grad(set_to_none=True)
            with self.precision():
                scores = model(x[idx])
            loss = self.loss_fn(scores.float(), y[idx])
            loss.backward()
            opt.step()
            loss.item()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)


class Interleave:
    """An nnc callback that runs one hand-written epoch after each nnc epoch, so that both
    sides of each pair run at the same moment of a shared machine."""

    def __init__(self, hand: HandWritten):
        self.hand, self.rates = hand, []

    def start(self, run) -> None: ...
    def before_step(self, run) -> None: ...
    def after_step(self, run) -> None: ...
    def end(self, run) -> None: ...

    def epoch_end(self, run, record: dict) -> dict:
        self.rates.append(self.hand.epoch())
        return {}


def pairs(graph, device: str) -> list[tuple[float, float]]:
    """(nnc, hand-written) samples/s per epoch of one run, the first (warm-up) epoch left out."""
    inter = Interleave(HandWritten(graph, device))
    with tempfile.TemporaryDirectory() as out:
        train(graph, out, device=device, quiet=True, callbacks=[inter])
        rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    nnc = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
    return list(zip(nnc, inter.rates))[1:]


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
    runs = [pairs(graph, a.device) for _ in range(a.repeats)]
    every = [p for run in runs for p in run]
    n, h = statistics.median(p[0] for p in every), statistics.median(p[1] for p in every)
    ratio = statistics.median(p[0] / p[1] for p in every)
    q = statistics.quantiles([p[0] / p[1] for p in every], n=4)
    print(f"spec {a.spec}, device {a.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{len(every)} epoch pairs ({a.repeats} runs x {a.epochs - 1} epochs after a warm-up), samples/s median:")
    print(f"hand-written loop : {h:10,.0f}  (per run: {', '.join(f'{statistics.median(p[1] for p in r):,.0f}' for r in runs)})")
    print(f"nnc train loop    : {n:10,.0f}  (per run: {', '.join(f'{statistics.median(p[0] for p in r):,.0f}' for r in runs)})")
    print(f"nnc / hand-written: {ratio:.3f} median of the per-epoch ratios (quartiles {q[0]:.3f}-{q[2]:.3f}), "
          f"overhead {100 * (1 - ratio):+.1f}%")


if __name__ == "__main__":
    main()
