"""What the default training monitors cost: "monitoring costs at most 5% of training throughput
when on by default".

`train()` on one spec, in one process, with the spec's own `monitor_every` and the default
monitors (on) and with none (off), interleaved in ABBA order so that drift in the machine hits
both sides alike. A small timing callback stamps wall time (perf_counter) and CPU time
(process_time) at every epoch end, after the monitors' own epoch-end work, so an epoch's time
holds everything the monitors add to it: the sampled steps in the loop, their TensorBoard
writes at epoch end, the epoch's warnings. The first epoch of each run is a warm-up and is
left out. Reported per side: the median epoch wall and CPU time and the throughput they give,
the training loop's own samples/s (train.py's figure, which leaves the epoch-end work out),
and the one-off end of the run (dashboard.png, filters.png) as whole-`train()` time.

The cost is 1 - throughput(on) / throughput(off), from the medians over all epochs of all
runs, and from the runs' paired ratios (median and range: a wide range says the machine was
too noisy to tell). On a busy machine prefer CPU time with one thread (`--threads 1`): wall
time then measures the neighbours too, and with several threads OpenMP's spinning under
contention inflates CPU time as well.

    python bench/monitor_overhead.py [--spec specs/digits_cnn.nnspec] [--epochs 8] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec
from nnc.runtime.monitors import default_monitors
from nnc.runtime.train import train

BUDGET = 0.05  # the issue's bound on the monitors' cost


class EpochClock:
    """A train() callback: (wall, cpu) seconds at the end of each epoch, after the callbacks
    listed before it."""

    def __init__(self):
        self.stamps: list[tuple[float, float]] = []

    def start(self, run):
        self.stamps = [(time.perf_counter(), time.process_time())]

    def before_step(self, run):
        pass

    def after_step(self, run):
        pass

    def epoch_end(self, run, record):
        self.stamps.append((time.perf_counter(), time.process_time()))

    def end(self, run):
        pass

    def epochs(self) -> list[tuple[float, float]]:
        """(wall, cpu) of each epoch after the first."""
        d = [(w1 - w0, c1 - c0) for (w0, c0), (w1, c1) in zip(self.stamps, self.stamps[1:])]
        return d[1:]


def one_run(spec: str, epochs: int, monitors: bool) -> dict:
    overrides = (f"train.epochs={epochs}",) if monitors else (f"train.epochs={epochs}", "train.monitor_every=0")
    graph = check(load_spec(spec, overrides))
    clock = EpochClock()
    callbacks = [*default_monitors(graph), clock] if monitors else [clock]
    with tempfile.TemporaryDirectory() as out:
        w0, c0 = time.perf_counter(), time.process_time()
        train(graph, out, device="cpu", quiet=True, callbacks=callbacks)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    ep = [r for r in rows if "samples_per_s" in r]
    if len(ep) < 3:
        raise SystemExit(f"{spec}: only {len(ep)} epochs ran (early stop?); need 3 or more, raise --epochs")
    return {"epochs": clock.epochs(), "loop": [r["samples_per_s"] for r in ep[1:]], "wall": wall, "cpu": cpu,
            "sampled": sum(1 for r in rows if r.get("monitor") == "step")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="specs/digits_cnn.nnspec")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="runs per side (ABBA-interleaved)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    graph = check(load_spec(a.spec, ()))
    one_run(a.spec, 3, True)  # warm-up: imports, the first backward pass, matplotlib, TensorBoard
    runs = {True: [], False: []}
    for i in range(a.repeats):
        for on in ((False, True) if i % 2 == 0 else (True, False)):
            runs[on].append(one_run(a.spec, a.epochs, on))

    med = statistics.median
    epoch_wall = {on: med(w for r in rs for w, _ in r["epochs"]) for on, rs in runs.items()}
    epoch_cpu = {on: med(c for r in rs for _, c in r["epochs"]) for on, rs in runs.items()}
    # per pair of runs (same repeat): throughput ratio on / off = time off / time on
    pairs = {k: [med(x[k] for x in off["epochs"]) / med(x[k] for x in on["epochs"])
                 for off, on in zip(runs[False], runs[True])] for k in (0, 1)}

    print(f"spec {a.spec}, {a.epochs} epochs x {a.repeats} runs per side (ABBA), monitor_every "
          f"{graph.spec.train.monitor_every}, {runs[True][0]['sampled']} sampled steps per run, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for on in (False, True):
        rs = runs[on]
        print(f"monitors {'on ' if on else 'off'}: epoch {epoch_wall[on] * 1e3:7.1f} ms wall, {epoch_cpu[on] * 1e3:7.1f} ms CPU"
              f" (median over {sum(len(r['epochs']) for r in rs)} epochs);  loop {med(x for r in rs for x in r['loop']):,.0f}"
              f" samples/s;  train() {med(r['wall'] for r in rs):.2f} s wall, {med(r['cpu'] for r in rs):.2f} s CPU")
    for k, what in ((1, "CPU time"), (0, "wall time")):
        t = epoch_cpu if k else epoch_wall
        cost = 1 - t[False] / t[True]
        print(f"cost by {what:9}: {100 * cost:+5.1f}% of throughput (pooled medians); paired runs: median "
              f"{100 * (1 - med(pairs[k])):+.1f}%, range {100 * (1 - max(pairs[k])):+.1f}% .. {100 * (1 - min(pairs[k])):+.1f}%  "
              f"[{'within' if cost <= BUDGET else 'OVER'} the {100 * BUDGET:.0f}% budget]")
    end = med(r["wall"] for r in runs[True]) - med(r["wall"] for r in runs[False]) - a.epochs * (epoch_wall[True] - epoch_wall[False])
    print(f"one-off at the end of a monitored run (pictures): ~{end:.2f} s wall")


if __name__ == "__main__":
    main()
