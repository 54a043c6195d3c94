"""What each start-up step of `nnc train` costs on its own, as whole processes: for each step,
`python -c BASE` and `python -c BASE; STEP` run alternately (the order flipping from pair to
pair), and the median of the paired differences is the step's cost in ms.

    python bench/startup_costs.py [--repeats 7] [--only dynamo,sklearn,...]

BASE is `import torch` (nnc has imported torch before any of these steps), except for the
rows that say otherwise. Pairs, not separate series: this 2-core VM is shared, and its speed
drifts by tens of percent within a minute.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = "import torch"
DIGITS_CSV = ("import gzip, importlib.util, pathlib, numpy as np; "
              "p = pathlib.Path(importlib.util.find_spec('sklearn').submodule_search_locations[0]) / 'datasets/data/digits.csv.gz'; "
              "a = np.loadtxt(gzip.open(p, 'rt'), delimiter=','); x, y = a[:, :-1], a[:, -1].astype(int)")
MODEL = "m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))"
STEP = "m(torch.randn(32, 64)).sum().backward()"
CASES = {  # name: (base, step, what it stands for in nnc train)
    "python": ("pass", TORCH, "import torch (base: a bare interpreter)"),
    "dynamo": (TORCH, "import torch._dynamo", "import torch._dynamo (what torch.optim's constructor does)"),
    "adam": (f"{TORCH}; {MODEL}", "torch.optim.Adam(m.parameters(), lr=1e-3)", "the first torch.optim.Adam(...)"),
    "adam_step": (f"{TORCH}; {MODEL}; {STEP}", "o = torch.optim.Adam(m.parameters()); o.step(); o.zero_grad()",
                  "Adam: construct + step + zero_grad"),
    "foreach_adam": (f"{TORCH}; {MODEL}; {STEP}",
                     "torch.set_grad_enabled(False); p = list(m.parameters()); g = [q.grad for q in p]; e = [torch.zeros_like(q) for q in p]; "
                     "v = [torch.zeros_like(q) for q in p]; torch._foreach_lerp_(e, g, 0.1); "
                     "torch._foreach_mul_(v, 0.999); torch._foreach_addcmul_(v, g, g, 0.001); "
                     "d = torch._foreach_sqrt(v); torch._foreach_add_(d, 1e-8); "
                     "torch._foreach_addcdiv_(p, e, d, -1e-3)",
                     "one Adam step written with torch._foreach ops (no torch.optim)"),
    "sklearn": (TORCH, "from sklearn.datasets import load_digits; d = load_digits()", "sklearn's load_digits()"),
    "digits_csv": (TORCH, DIGITS_CSV, "the same CSV read by numpy.loadtxt + gzip (no sklearn)"),
    "tensorboard": (TORCH, "from torch.utils.tensorboard import SummaryWriter", "torch.utils.tensorboard"),
    "tb_writer": (TORCH, "import tempfile; from torch.utils.tensorboard import SummaryWriter; "
                         "w = SummaryWriter(tempfile.mkdtemp()); w.add_scalar('a', 1.0, 1); w.close()",
                  "SummaryWriter + one scalar + close"),
    "matplotlib": (TORCH, "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot",
                   "matplotlib.pyplot (Agg)"),
    "safetensors": (TORCH, "import safetensors.torch", "safetensors.torch"),
    "rich": (TORCH, "import rich.progress", "rich.progress (sklearn imports it too)"),
    "nnc_graph": (TORCH, "from nnc.compiler.load import load_spec; from nnc.compiler.checks import check; "
                         "g = check(load_spec('specs/digits_cnn.nnspec'))", "nnc: parse + check digits_cnn"),
    "nnc_train_mod": (TORCH, "import nnc.runtime.train", "import nnc.runtime.train (and what it imports)"),
}


def one(code: str) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        sys.exit(f"failed: python -c {code!r}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def measure(base: str, step: str, repeats: int) -> tuple[list[float], list[float]]:
    with_step = f"{base}; {step}"
    one(base), one(with_step)  # warm-up: file cache, .pyc
    b, w = [], []
    for i in range(repeats):
        if i % 2 == 0:
            b.append(one(base))
            w.append(one(with_step))
        else:
            w.append(one(with_step))
            b.append(one(base))
    return b, w


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", help="comma-separated case names: " + ", ".join(CASES))
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(CASES)
    from importlib.metadata import version

    print(f"torch {version('torch')}, {a.repeats} alternating pairs per row; ms")
    print(f"{'case':14s} {'base':>7s} {'+step':>7s} {'cost':>7s} {'(quartiles)':>15s}  what")
    for name in names:
        base, step, what = CASES[name]
        b, w = measure(base, step, a.repeats)
        d = [1e3 * (y - x) for x, y in zip(b, w)]
        q = statistics.quantiles(d, n=4)
        print(f"{name:14s} {1e3 * statistics.median(b):7.0f} {1e3 * statistics.median(w):7.0f} "
              f"{statistics.median(d):7.0f} {f'({q[0]:.0f}..{q[2]:.0f})':>15s}  {what}", flush=True)


if __name__ == "__main__":
    main()
