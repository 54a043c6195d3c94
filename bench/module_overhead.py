"""The module nnc builds (compiler/modules.SpecNet: the graph's forward as generated straight-line
code) against nn.Sequential of the very same layer objects, on training steps of one small model:
what running a spec's forward costs over the plain PyTorch container. Side by side, alternating
blocks of steps so both meet the same load of a shared machine; prints the median ratio.

    python bench/module_overhead.py [--spec specs/digits_mlp.nnspec] [--batch 32] [--blocks 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec
from nnc.compiler.torch_module import build_model


def steps(model, opt, x, y, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/digits_mlp.nnspec")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    graph = check(load_spec(args.spec))
    if any(l.merge for l in graph.layers()) or graph.several:
        raise SystemExit("a chain of layers is needed: nn.Sequential cannot run merges")
    spec_net = build_model(graph)
    seq = nn.Sequential(*spec_net._steps)  # the same module objects, the same weights
    x = torch.randn(args.batch, *graph.input.dims)
    y = torch.randint(0, graph.output.features, (args.batch,))
    runs = {"SpecNet": (spec_net, torch.optim.Adam(spec_net.parameters())),
            "nn.Sequential": (seq, torch.optim.Adam(seq.parameters()))}
    for m, opt in runs.values():
        steps(m, opt, x, y, 50)  # warm-up
    times = {k: [] for k in runs}
    for _ in range(args.blocks):
        for k, (m, opt) in runs.items():
            times[k].append(steps(m, opt, x, y, args.steps))
    ratios = [a / b for a, b in zip(times["SpecNet"], times["nn.Sequential"])]
    print(f"spec {args.spec}, batch {args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for k, t in times.items():
        print(f"{k:<14}: {statistics.median(t) * 1e6:8.1f} us per training step (median of {args.blocks} blocks)")
    print(f"SpecNet / nn.Sequential: {statistics.median(ratios):.3f} (median of the per-block ratios)")


if __name__ == "__main__":
    main()
