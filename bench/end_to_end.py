"""`nnc train SPEC` as a whole process against the hand-written script that does the same job
(bench/handwritten_digits.py), on digits_cnn and digits_mlp. Goal tracked: nnc <= 1.10x.

    python bench/end_to_end.py [--spec cnn|mlp|both] [--pairs 5] [--threads N]
    python bench/end_to_end.py --importtime [--spec cnn] [--top 25]
    python bench/end_to_end.py --smoke          # one 1-epoch pair of digits_mlp (CI)

Each pair runs `nnc train specs/digits_<spec>.nnspec --out <tmp> -q` and `python
bench/handwritten_digits.py --spec <spec>` one after the other, the order alternating from pair
to pair (after one unmeasured warm-up run of each, which fills the OS file cache), so that both
sides of a pair meet the same load of a shared machine. Reported: each pair's wall times, CPU
times (user + sys of the child; the background process that draws nnc's pictures is not
counted), when nnc's pictures were all written ("pics s", waited for before the next run) and
test accuracies, and the median of the per-pair wall-time
ratios nnc / hand-written with its quartiles. Training is seeded on both sides; both reach the
same test accuracy (the hand-written script follows nnc's decisions, see its docstring).

--importtime runs `python -X importtime -m nnc.cli train ...` (and the hand-written script the
same way) and prints the self time of every import grouped by top-level package, both sides
side by side, and the slowest single modules of the nnc run. Imports that happen late (the
first backward pass's torch._dynamo, TensorBoard at the first scalar, matplotlib for the plots)
are in the log too: -X importtime logs every import whenever it happens.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HAND = ROOT / "bench" / "handwritten_digits.py"


def nnc_cmd() -> list[str]:
    script = shutil.which("nnc", path=str(Path(sys.executable).parent)) or shutil.which("nnc")
    return [script] if script else [sys.executable, "-m", "nnc.cli"]


BACKGROUND = re.compile(r"^plot: (.+) \(drawing in the background\)$", re.M)


def run(cmd: list[str], env: dict) -> tuple[float, float, str, float]:
    """(wall s, child CPU s, stdout, s until its pictures exist) of one whole process. Pictures
    that nnc draws in a background process are waited for before the next run starts (so that
    the drawing does not slow the other side), but not counted in the wall time: the exit code
    and the printed result do not wait for them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    pictures = [Path(m) for m in BACKGROUND.findall(p.stdout)]
    while not all(f.is_file() for f in pictures) and time.perf_counter() - t0 < wall + 120:
        time.sleep(0.02)
    return wall, cpu, p.stdout, time.perf_counter() - t0


def accuracy(out: str) -> str:
    m = re.search(r"test accuracy ([\d.]+%)", out)
    return m.group(1) if m else "?"


def sides(spec: str, epochs: int | None, tmp: Path):
    """The two commands of a pair; nnc's gets a fresh --out each call."""
    extra = ["--epochs", str(epochs)] if epochs else []
    count = iter(range(10**6))
    nnc = lambda: [*nnc_cmd(), "train", f"specs/digits_{spec}.nnspec", "--out", str(tmp / f"run{next(count)}"), "-q",
                   *extra]
    hand = lambda: [sys.executable, str(HAND), "--spec", spec, *extra]
    return nnc, hand


def pairs(spec: str, n: int, epochs: int | None, env: dict, warmup: bool = True) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nnc, hand = sides(spec, epochs, Path(tmp))
        if warmup:
            run(nnc(), env), run(hand(), env)
        rows = []
        print(f"\ndigits_{spec}: nnc train vs bench/handwritten_digits.py, {n} pair(s), order alternating"
              + (f", --epochs {epochs}" if epochs else ""))
        print(f"{'pair':>4s} {'first':>5s} | {'nnc s':>7s} {'cpu s':>6s} {'pics s':>6s} {'acc':>7s} | {'hand s':>7s} "
              f"{'cpu s':>6s} {'acc':>7s} | {'nnc/hand':>8s}")
        for i in range(n):
            order = ("nnc", "hand") if i % 2 == 0 else ("hand", "nnc")
            got = {}
            for side in order:
                got[side] = run(nnc() if side == "nnc" else hand(), env)
            (wn, cn, on, pn), (wh, ch, oh, _) = got["nnc"], got["hand"]
            rows.append((wn, wh, cn, ch, pn))
            print(f"{i + 1:4d} {order[0]:>5s} | {wn:7.2f} {cn:6.2f} {pn:6.2f} {accuracy(on):>7s} | {wh:7.2f} {ch:6.2f} "
                  f"{accuracy(oh):>7s} | {wn / wh:8.3f}", flush=True)
    ratios = [r[0] / r[1] for r in rows]
    cpu_ratios = [r[2] / r[3] for r in rows]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    med = statistics.median(ratios)
    print(f"median wall s: nnc {statistics.median(r[0] for r in rows):.2f} (its pictures drawn by "
          f"{statistics.median(r[4] for r in rows):.2f}), hand-written {statistics.median(r[1] for r in rows):.2f}")
    print(f"nnc / hand-written wall time: {med:.3f} median of {len(ratios)} paired ratios (quartiles "
          f"{q[0]:.3f}-{q[2]:.3f}); CPU time: {statistics.median(cpu_ratios):.3f}; goal <= 1.10: "
          f"{'met' if med <= 1.10 else 'not met'}")


LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def importtime(cmd: list[str], env: dict) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) of every import of one process."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    out = []
    for line in p.stderr.splitlines():
        m = LINE.match(line)
        if m:
            out.append((m.group(4), int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2))
    return out


def grouped(rows) -> dict[str, int]:
    g: dict[str, int] = defaultdict(int)
    for name, self_us, _, _ in rows:
        g[name.split(".")[0]] += self_us
    return g


def show_importtime(spec: str, top: int, env: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nnc = [sys.executable, "-X", "importtime", "-m", "nnc.cli", "train", f"specs/digits_{spec}.nnspec",
               "--out", str(Path(tmp) / "run"), "-q"]
        hand = [sys.executable, "-X", "importtime", str(HAND), "--spec", spec]
        importtime(nnc[:5] + ["check", f"specs/digits_{spec}.nnspec"], env)  # warm the file cache and .pyc files
        importtime(hand, env)
        a, b = importtime(nnc, env), importtime(hand, env)
    ga, gb = grouped(a), grouped(b)
    ta, tb = sum(ga.values()), sum(gb.values())
    print(f"\n`{' '.join(nnc[1:5])} train specs/digits_{spec}.nnspec -q` vs `python -X importtime "
          f"bench/handwritten_digits.py --spec {spec}`")
    print(f"import self time by top-level package, ms (sum over {len(a)} / {len(b)} imports):")
    print(f"{'package':28s} {'nnc':>8s} {'hand':>8s} {'nnc-hand':>9s}")
    for pkg in sorted(set(ga) | set(gb), key=lambda k: -ga.get(k, 0))[:top]:
        print(f"{pkg:28s} {ga.get(pkg, 0) / 1e3:8.0f} {gb.get(pkg, 0) / 1e3:8.0f} {(ga.get(pkg, 0) - gb.get(pkg, 0)) / 1e3:9.0f}")
    print(f"{'(all)':28s} {ta / 1e3:8.0f} {tb / 1e3:8.0f} {(ta - tb) / 1e3:9.0f}")
    only = sorted({n for n, *_ in a} - {n for n, *_ in b})
    sub = defaultdict(int)
    for name, self_us, _, _ in a:
        if name in only:
            parts = name.split(".")
            sub[".".join(parts[:2])] += self_us
    print(f"\nimported by nnc only ({len(only)} modules), self ms by package.subpackage (top {top}):")
    for k, v in sorted(sub.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {k:40s} {v / 1e3:7.0f}")
    print("\nslowest single modules of the nnc run (self ms, cumulative ms):")
    for name, s, c, _ in sorted(a, key=lambda r: -r[1])[:top]:
        print(f"  {name:50s} {s / 1e3:7.0f} {c / 1e3:8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", choices=("cnn", "mlp", "both"), default="both")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--epochs", type=int, help="override both sides' epochs")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both sides (default: torch's, one per core)")
    ap.add_argument("--importtime", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--smoke", action="store_true", help="one 1-epoch pair of digits_mlp, no warm-up (CI)")
    a = ap.parse_args()
    env = dict(os.environ)
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    from importlib.metadata import version

    print(f"{os.cpu_count()} CPUs, torch {version('torch')}, "
          f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '(unset)')}, {time.strftime('%Y-%m-%d %H:%M')}")
    specs = ("cnn", "mlp") if a.spec == "both" else (a.spec,)
    if a.smoke:
        pairs("mlp", 1, 1, env, warmup=False)
    elif a.importtime:
        for s in specs:
            show_importtime(s, a.top, env)
    else:
        for s in specs:
            pairs(s, a.pairs, a.epochs, env)


if __name__ == "__main__":
    main()
