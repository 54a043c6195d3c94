"""Where the wall time of `nnc train SPEC -q` goes, phase by phase.

    python bench/train_phases.py [--spec specs/digits_cnn.nnspec] [--repeats 3] [--fsync]

Each repeat runs a fresh child process that calls nnc's own CLI entry (`nnc.cli.main(["train",
SPEC, "--out", TMP, "-q"])`) with timers wrapped around the functions that make up a run
(parse/check, data, model, optimizer, the loop's pieces, checkpoints, logs, monitors, plots);
each phase is counted as self time (time inside it minus time in other timed phases it
calls), so the rows add up to the process's wall time. The training steps themselves are
taken from metrics.jsonl (examples / samples_per_s of each epoch); "loop: other" is the rest of
train()'s own time (the divergence checks, the end-of-epoch no-grad loss, progress, meter).
"interpreter start" is the parent's spawn to the child's first line, "exit" the child's last
line to the parent seeing it end. Median over the repeats, ms.

The wrapped names are those of this commit's package layout (nnc.runtime.train etc.); a
wrapper whose target has moved is reported as missing and its time falls into "other".
--fsync also counts the os.fsync calls of the atomic checkpoint writes as their own phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Timer:
    """Self time per label, with nesting: a timed call inside another counts for its own label."""

    def __init__(self):
        self.self_s: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list] = []  # [label, t0, child seconds]

    def wrap(self, fn, label):
        timer = self

        def inner(*args, **kwargs):
            lab = label(args, kwargs, timer) if callable(label) else label
            timer.stack.append([lab, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                lab, t0, child = timer.stack.pop()
                dt = time.perf_counter() - t0
                timer.self_s[lab] += dt - child
                timer.calls[lab] += 1
                if timer.stack:
                    timer.stack[-1][2] += dt

        inner.__wrapped__ = fn
        return inner

    def patch(self, obj, name: str, label, missing: list) -> None:
        if not hasattr(obj, name):
            missing.append(f"{getattr(obj, '__name__', obj)}.{name}")
            return
        setattr(obj, name, self.wrap(getattr(obj, name), label))

    def inside(self, label: str) -> bool:
        return any(f[0] == label for f in self.stack)


def child(spec: str, out: str, t_spawn: float, fsync: bool) -> None:
    t_first = time.time()
    timer = Timer()
    t0 = time.perf_counter()
    import torch

    t_torch = time.perf_counter() - t0
    t0 = time.perf_counter()
    import nnc.cli
    import nnc.commands.train
    import nnc.compiler.checks
    import nnc.compiler.load
    import nnc.runtime.checkpoint
    import nnc.runtime.monitors
    import nnc.runtime.plots
    import nnc.runtime.preprocess
    import nnc.runtime.run_dir
    import nnc.runtime.train as T

    t_nnc = time.perf_counter() - t0
    missing: list[str] = []
    p = timer.patch
    p(nnc.compiler.load, "load_spec", "spec: parse", missing)
    p(nnc.compiler.checks, "check", "spec: check", missing)
    p(T, "load_splits", "data: load_splits (sklearn import + load_digits + split)", missing)
    p(nnc.runtime.preprocess, "fit_for", "data: preprocess fit", missing)
    p(T, "tensors", "data: preprocess apply + tensors", missing)
    p(T, "build_model", "model: build + init", missing)
    p(torch.optim.Optimizer, "__init__", "optimizer: construct (imports torch._dynamo)", missing)
    p(nnc.runtime.monitors.Monitor, "start", "monitors: start (hooks)", missing)
    p(nnc.runtime.monitors.Monitor, "after_step", "monitors: step hooks", missing)
    p(nnc.runtime.monitors.Monitor, "_opt_pre", "monitors: step hooks", missing)
    p(nnc.runtime.monitors.Monitor, "epoch_end", "monitors: epoch_end (TensorBoard events)", missing)
    p(nnc.runtime.monitors.Monitor, "end", "monitors: end (dashboard.png, filters.png)", missing)
    p(T, "evaluate", lambda a, k, t: "test: evaluate" if t.inside("finish") else "validation: evaluate per epoch",
      missing)
    p(T, "save", lambda a, k, t: f"checkpoint: save {a[2]} (safetensors, atomic)", missing)
    p(nnc.runtime.run_dir.MetricsLog, "write", "log: metrics.jsonl + TensorBoard scalars", missing)
    p(nnc.runtime.run_dir.MetricsLog, "close", "log: close (TensorBoard flush)", missing)
    p(nnc.runtime.run_dir, "write_spec_copy", "log: spec copy", missing)
    p(nnc.runtime.checkpoint, "load", "finish: load best checkpoint", missing)
    p(nnc.runtime.plots, "training_curves", "finish: loss.png, accuracy.png", missing)
    p(T, "finish", "finish: other", missing)
    p(T, "train", "loop: other (train()'s own time)", missing)
    seen = {}
    prepare = T.prepare

    def prepare_(*args, **kwargs):
        s, st = prepare(*args, **kwargs)
        seen["n"] = len(s.train[0])
        return s, st

    T.prepare = timer.wrap(prepare_, "prepare: other (seeds, run dir, param groups)")
    p(nnc.commands.train, "cmd_train", "cmd_train: other", missing)
    if fsync:
        p(os, "fsync", "checkpoint: os.fsync", missing)
    t0 = time.perf_counter()
    rc = nnc.cli.main(["train", spec, "--out", out, "-q"])
    t_main = time.perf_counter() - t0
    rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "samples_per_s" in r]
    final = next(r["final"] for r in rows if "final" in r)
    steps_s = sum(seen["n"] / r["samples_per_s"] for r in epochs)  # each epoch's examples / its samples_per_s
    phases = dict(timer.self_s)
    # the epochs' clock also ran over the monitors' step hooks, timed on their own row
    steps_s -= phases.get("monitors: step hooks", 0.0)
    phases["loop: training steps (metrics.jsonl)"] = steps_s
    phases["loop: other (train()'s own time)"] = phases.get("loop: other (train()'s own time)", 0.0) - steps_s
    phases["import torch"] = t_torch
    phases["import nnc (cli, compiler, runtime)"] = t_nnc
    phases["main: unaccounted"] = t_main - sum(timer.self_s.values())
    print(json.dumps({"rc": rc, "phases": phases, "calls": dict(timer.calls), "missing": missing,
                      "start": t_first - t_spawn, "t_end": time.time(), "epochs": len(epochs),
                      "test_accuracy": final["test_accuracy"]}))
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/digits_cnn.nnspec")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fsync", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("SPEC", "OUT", "T_SPAWN"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], float(a.child[2]), a.fsync)
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats + 1):  # the first: a warm-up (file cache, .pyc), not counted
            out = str(Path(tmp) / f"run{i}")
            t_spawn = time.time()
            p = subprocess.run([sys.executable, __file__, "--child", a.spec, out, repr(t_spawn)]
                               + (["--fsync"] if a.fsync else []), capture_output=True, text=True, cwd=ROOT)
            t_done = time.time()
            if p.returncode:
                sys.exit(p.stderr[-3000:])
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["phases"]["interpreter start"] = r["start"]
            r["phases"]["exit"] = t_done - r["t_end"]
            r["wall"] = t_done - t_spawn
            if i:
                runs.append(r)
            print(f"run {i}{' (warm-up)' if not i else ''}: wall {r['wall']:.2f} s, {r['epochs']} epochs, test accuracy "
                  f"{100 * r['test_accuracy']:.2f}%", file=sys.stderr, flush=True)
    if runs[0]["missing"]:
        print(f"not found (moved?): {', '.join(runs[0]['missing'])}")
    names = sorted({k for r in runs for k in r["phases"]}, key=lambda k: -statistics.median(r["phases"].get(k, 0) for r in runs))
    wall = statistics.median(r["wall"] for r in runs)
    walls = ", ".join(f"{r['wall']:.2f}" for r in runs)
    print(f"`nnc train {a.spec} -q`: {a.repeats} runs, median wall {wall:.2f} s (runs: {walls}); ms, median over runs")
    print(f"{'phase':60s} {'ms':>8s} {'share':>6s} {'calls':>6s}")
    for k in names:
        ms = 1e3 * statistics.median(r["phases"].get(k, 0) for r in runs)
        print(f"{k:60s} {ms:8.0f} {100 * ms / 1e3 / wall:5.1f}% {runs[0]['calls'].get(k, ''):>6}")


if __name__ == "__main__":
    main()
