"""A CIFAR-shaped conv net on the CPU: nnc's training loop against hand-written PyTorch loops,
and against this machine's float32 matmul peak. Goals tracked: nnc >= 1.05x the best
hand-written loop, and >= 60% of the matmul peak.

    python bench/conv_cpu.py [--rounds 5] [--n 1280] [--epochs 3] [--threads N]
    python bench/conv_cpu.py --variants [--rounds 3]      # candidate fixes, in the hand-written loop
    python bench/conv_cpu.py --profile                     # torch.profiler of the channels_last loop
    python bench/conv_cpu.py --smoke                       # one tiny round (CI)

The net: conv32-conv32-pool-conv64-conv64-pool-fc512-fc10 with ReLUs, 3x32x32 inputs, batch 128,
SGD momentum 0.9 (lr 0.01, constant), cross-entropy, He init, synthetic normal data in memory.

nnc side: the spec is written to a temp file with `data synthetic(n=N), val 0.05, test 0` and
trained by the CLI (`nnc train SPEC --out TMP -q --epochs E`), with nnc's defaults (monitors every
50 steps; `--no-monitors` adds a second nnc row with `monitor_every 0`); its rate is the median
`samples_per_s` of metrics.jsonl's epochs after the first. Hand-written side, in this process:
the same net, data and optimizer, batches gathered by x[perm[i:i+B]], loss.item() per step, in
NCHW and in channels_last, E epochs each, the first a warm-up. A round runs the three (four)
loops, in an order that rotates from round to round; each round gives a ratio nnc / best
hand-written, and the median of those ratios is reported.

Peak: GFLOP/s of a 2048x2048 float32 torch.mm (the best of 5 repeats of 10 products, measured
in every round next to the loops). Achieved: samples/s x FLOPs per example (`nnc show --json`,
a multiply-add counted as 2) x 3 (forward, and a backward of about twice the forward).

--variants measures the candidate fixes one at a time in the channels_last hand-written loop
against that loop as it is (alternating, median paired ratio): SGD foreach=True, fused=True,
zero_grad(set_to_none=False), batches sliced from a once-per-epoch permuted copy (no per-step
gather), no loss.item() per step, one thread; and no_grad vs inference_mode for a validation pass.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
SPEC = """nnspec 1

model CifarConv {{
    input image(3, 32, 32)

    conv    conv1 32 kernel 3 pad 1
    relu
    conv    conv2 32 kernel 3 pad 1
    relu
    maxpool pool1 kernel 2 stride 2
    conv    conv3 64 kernel 3 pad 1
    relu
    conv    conv4 64 kernel 3 pad 1
    relu
    maxpool pool2 kernel 2 stride 2
    dense   fc1 512
    relu
    dense   fc2 10
}}

init       weights he, bias constant(0)
loss       cross_entropy
optimizer  sgd(lr=0.01, momentum=0.9)
schedule   constant
data       synthetic(n={n}), val 0.05, test 0
train      batch 128, epochs {epochs}{monitors}
"""
BATCH = 128


def nnc_cmd() -> list[str]:
    script = shutil.which("nnc", path=str(Path(sys.executable).parent)) or shutil.which("nnc")
    return [script] if script else [sys.executable, "-m", "nnc.cli"]


def write_spec(folder: Path, n: int, epochs: int, monitors: bool) -> Path:
    path = folder / ("cifar_conv.nnspec" if monitors else "cifar_conv_nomon.nnspec")
    path.write_text(SPEC.format(n=n, epochs=epochs, monitors="" if monitors else ", monitor_every 0"))
    return path


def flops_per_example(spec: Path) -> int:
    out = subprocess.run([*nnc_cmd(), "show", "--json", str(spec)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["flops"]


def nnc_rate(spec: Path, tmp: Path, tag: str) -> float:
    out = tmp / f"run-{tag}"
    subprocess.run([*nnc_cmd(), "train", str(spec), "--out", str(out), "-q"], check=True, capture_output=True,
                   cwd=ROOT)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
    shutil.rmtree(out, ignore_errors=True)
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def net() -> nn.Sequential:
    m = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2, 2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                      nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(64 * 8 * 8, 512), nn.ReLU(),
                      nn.Linear(512, 10))
    with torch.no_grad():
        for layer in m:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight.normal_(0, math.sqrt(2 / layer.weight[0].numel()))
                layer.bias.zero_()
    return m


class Hand:
    """A hand-written loop; the keyword options are the candidate fixes (defaults: as nnc does)."""

    def __init__(self, n: int, channels_last: bool, foreach: bool | None = None, fused: bool | None = None,
                 set_to_none: bool = True, gather: bool = True, item: bool = True):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)
        torch.manual_seed(0)
        self.model = net()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        kw = {k: v for k, v in (("foreach", foreach), ("fused", fused)) if v is not None}
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, **kw)
        self.loss_fn = nn.CrossEntropyLoss()
        self.set_to_none, self.gather, self.item = set_to_none, gather, item

    def epoch(self) -> float:
        x, y, n = self.x, self.y, len(self.x)
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        if not self.gather:  # one permuted copy per epoch; the batches are then views
            x, y = x[perm], y[perm]
        for i in range(0, n, BATCH):
            if self.gather:
                idx = perm[i:i + BATCH]
                xb, yb = x[idx], y[idx]
            else:
                xb, yb = x[i:i + BATCH], y[i:i + BATCH]
            self.opt.zero_grad(set_to_none=self.set_to_none)
            loss = self.loss_fn(self.model(xb), yb)
            loss.backward()
            self.opt.step()
            if self.item:
                loss.item()
        return n / (time.perf_counter() - t0)

    def rate(self, epochs: int) -> float:
        rates = [self.epoch() for _ in range(epochs)]
        return statistics.median(rates[1:] if len(rates) > 1 else rates)


def matmul_peak(size: int = 2048, reps: int = 10, tries: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(tries):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def compare(a) -> None:
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        spec = write_spec(tmp, a.n, a.epochs, monitors=True)
        spec_nomon = write_spec(tmp, a.n, a.epochs, monitors=False)
        flops = flops_per_example(spec)
        train_flops = 3 * flops
        print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"n={a.n}, batch {BATCH}, {a.epochs} epochs per loop (first one a warm-up), {a.rounds} rounds")
        print(f"FLOPs per example: {flops / 1e6:.1f}M forward (nnc show --json), {train_flops / 1e6:.1f}M per trained "
              "example (x3)")
        sides = ["nnc", "nchw", "channels_last"] + (["nnc (monitors off)"] if a.no_monitors else [])
        rows = []
        print(f"{'round':>5s} {'peak GF/s':>9s} | " + " ".join(f"{s:>18s}" for s in sides)
              + f" | {'nnc/best hand':>13s} {'%peak nnc':>9s}")
        for r in range(a.rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            got = {}
            for side in order:
                if side == "nnc":
                    got[side] = nnc_rate(spec, tmp, f"{r}")
                elif side == "nnc (monitors off)":
                    got[side] = nnc_rate(spec_nomon, tmp, f"{r}-nomon")
                else:
                    got[side] = Hand(a.n, channels_last=side == "channels_last").rate(a.epochs)
            peak = matmul_peak()
            best = max(got["nchw"], got["channels_last"])
            rows.append({**got, "peak": peak, "ratio": got["nnc"] / best})
            print(f"{r + 1:5d} {peak:9.0f} | " + " ".join(f"{got[s]:18,.0f}" for s in sides)
                  + f" | {got['nnc'] / best:13.3f} {100 * got['nnc'] * train_flops / 1e9 / peak:8.1f}%", flush=True)
    med = {s: statistics.median(r[s] for r in rows) for s in sides + ["peak"]}
    ratios = [r["ratio"] for r in rows]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print("median samples/s: " + ", ".join(f"{s} {med[s]:,.0f}" for s in sides))
    print(f"nnc / best hand-written: {statistics.median(ratios):.3f} median of {len(ratios)} per-round ratios "
          f"(quartiles {q[0]:.3f}-{q[2]:.3f}); goal >= 1.05: {'met' if statistics.median(ratios) >= 1.05 else 'not met'}")
    print(f"channels_last / nchw: {statistics.median(r['channels_last'] / r['nchw'] for r in rows):.3f} median ratio")
    if a.no_monitors:
        print(f"nnc monitors off / on: {statistics.median(r['nnc (monitors off)'] / r['nnc'] for r in rows):.3f}")
    for s in sides:
        frac = [r[s] * train_flops / 1e9 / r["peak"] for r in rows]
        print(f"{s:20s}: {statistics.median(r[s] * train_flops / 1e9 for r in rows):6.1f} GFLOP/s achieved, "
              f"{100 * statistics.median(frac):5.1f}% of the matmul peak (median {med['peak']:.0f} GFLOP/s); goal >= 60%")


VARIANTS = {
    "SGD foreach=True": {"foreach": True},
    "SGD fused=True": {"fused": True},
    "zero_grad(set_to_none=False)": {"set_to_none": False},
    "batches as views of a permuted copy": {"gather": False},
    "no loss.item() per step": {"item": False},
}


def variants(a) -> None:
    print(f"candidate fixes in the channels_last hand-written loop, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, n={a.n}, {a.epochs} epochs per loop, {a.rounds} alternating rounds")
    print(f"{'variant':40s} {'base s/s':>9s} {'variant s/s':>11s} {'ratio':>7s} {'(quartiles)':>15s}")
    cases = dict(VARIANTS)
    cases["1 thread (torch.set_num_threads(1))"] = {}
    for name, kw in cases.items():
        ratios, base_r, var_r = [], [], []
        for r in range(a.rounds):
            for which in (("base", "var") if r % 2 == 0 else ("var", "base")):
                threads = torch.get_num_threads()
                if which == "var" and name.startswith("1 thread"):
                    torch.set_num_threads(1)
                rate = Hand(a.n, True, **(kw if which == "var" else {})).rate(a.epochs)
                torch.set_num_threads(threads)
                (var_r if which == "var" else base_r).append(rate)
            ratios.append(var_r[-1] / base_r[-1])
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"{name:40s} {statistics.median(base_r):9,.0f} {statistics.median(var_r):11,.0f} "
              f"{statistics.median(ratios):7.3f} {f'({q[0]:.3f}-{q[2]:.3f})':>15s}", flush=True)
    # validation pass: no_grad (what nnc's evaluate uses) vs inference_mode
    h = Hand(a.n, True)
    h.model.eval()
    xv = h.x[:512]

    def val(ctx) -> float:
        t0 = time.perf_counter()
        with ctx():
            for _ in range(3):
                h.model(xv).argmax(1)
        return time.perf_counter() - t0

    val(torch.no_grad)
    pairs = []
    for r in range(max(a.rounds, 5)):
        if r % 2 == 0:
            ng, im = val(torch.no_grad), val(torch.inference_mode)
        else:
            im, ng = val(torch.inference_mode), val(torch.no_grad)
        pairs.append(ng / im)
    print(f"validation pass (3 x 512 examples): inference_mode speed-up over no_grad {statistics.median(pairs):.3f} "
          f"(median of {len(pairs)} pairs)")


def profile(a) -> None:
    """torch.profiler over a few steps of the channels_last loop (nnc's layout): time per op kind,
    and each op's GFLOP/s where the profiler counts FLOPs."""
    from torch.profiler import ProfilerActivity, profile as prof

    h = Hand(a.n, True)
    h.epoch()  # warm-up
    with prof(activities=[ProfilerActivity.CPU], with_flops=True) as p:
        h.epoch()
    print(f"torch.profiler, channels_last hand-written loop, one epoch of {a.n} examples, "
          f"{torch.get_num_threads()} threads")
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=44))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=1280, help="synthetic examples (10 steps of 128 per epoch)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads here and OMP_NUM_THREADS for nnc")
    ap.add_argument("--no-monitors", action="store_true", help="also nnc with monitor_every 0")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of the channels_last loop")
    ap.add_argument("--smoke", action="store_true", help="one round, n=256, 2 epochs (CI)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    if a.smoke:
        a.rounds, a.n, a.epochs = 1, 256, 2
    if a.profile:
        profile(a)
    else:
        variants(a) if a.variants else compare(a)


if __name__ == "__main__":
    main()
