"""How long a process takes to end after its last line: the child prints time.time() as its last
act and the parent measures until the process is gone. Cases alternate, N rounds, median ms.

    python bench/exit_cost.py [--rounds 5] [--spec specs/digits_mlp.nnspec]

Cases: what has been imported / done before the end (torch; + torch._dynamo; + sklearn's
load_digits; + a matplotlib figure saved; + a TensorBoard writer closed), and a whole `nnc
train SPEC -q --epochs 2` run ended normally vs ended by os._exit(0) right after its output is
flushed (what a CLI can do once everything is written and closed).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
END = "import sys, time; sys.stdout.flush(); print(repr(time.time()), flush=True)"
CASES = {
    "import torch": "import torch",
    "+ torch._dynamo": "import torch, torch._dynamo",
    "+ sklearn load_digits": "import torch, torch._dynamo; from sklearn.datasets import load_digits; load_digits()",
    "+ matplotlib savefig": ("import torch, torch._dynamo, tempfile, matplotlib; matplotlib.use('Agg'); "
                             "import matplotlib.pyplot as plt; f = plt.figure(); plt.plot([1, 2]); "
                             "f.savefig(tempfile.mktemp(suffix='.png')); plt.close(f)"),
    "+ TensorBoard writer": ("import torch, torch._dynamo, tempfile; from torch.utils.tensorboard import SummaryWriter; "
                             "w = SummaryWriter(tempfile.mkdtemp()); w.add_scalar('a', 1.0, 1); w.close()"),
}
NNC = ("import nnc.cli, tempfile, os; rc = nnc.cli.main(['train', {spec!r}, '--out', tempfile.mkdtemp() + '/r', "
       "'-q', '--epochs', '2'])")


def one(code: str) -> tuple[float, float]:
    """(exit ms, wall s)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    done, wall = time.time(), time.perf_counter() - t0
    if p.returncode:
        sys.exit(p.stderr[-2000:])
    last = float(p.stdout.strip().splitlines()[-1])
    return 1e3 * (done - last), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--spec", default="specs/digits_mlp.nnspec")
    a = ap.parse_args()
    cases = {k: f"{v}; {END}" for k, v in CASES.items()}
    nnc = NNC.format(spec=a.spec)
    cases[f"nnc train {Path(a.spec).name} (normal exit)"] = f"{nnc}; {END}"
    cases[f"nnc train {Path(a.spec).name} + os._exit(0)"] = f"{nnc}; {END}; os._exit(rc)"
    for code in cases.values():  # warm-up
        one(code)
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    names = list(cases)
    for r in range(a.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            got[name].append(one(cases[name]))
    print(f"exit time after the last line, ms, median of {a.rounds} alternating rounds (wall s beside)")
    for name in names:
        ex = [e for e, _ in got[name]]
        print(f"  {name:48s} {statistics.median(ex):7.0f} ms   (min {min(ex):.0f}, max {max(ex):.0f}; "
              f"wall {statistics.median(w for _, w in got[name]):.2f} s)")


if __name__ == "__main__":
    main()
