"""Wall time of `nnc check SPEC` as a whole process, against `python -c pass` and `import torch`.

    python bench/check_time.py [--spec specs/alexnet.nnspec] [--repeats 10]

Each command is run --repeats times in a fresh process (after one unmeasured warm-up run that fills
the OS file cache); prints min and median, and each as a ratio to the bare interpreter's start-up
and to `import torch` (the cost `check` must not pay, docs/architecture.md).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def times(cmd: list[str], repeats: int) -> list[float]:
    subprocess.run(cmd, check=True, capture_output=True)  # warm-up; also fails loudly on a bad spec
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/alexnet.nnspec")
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    py = sys.executable
    cases = {"python -c pass": [py, "-c", "pass"],
             "python -c 'import torch'": [py, "-c", "import torch"],
             f"python -m nnc.cli check {a.spec}": [py, "-m", "nnc.cli", "check", "-q", a.spec]}
    script = shutil.which("nnc")
    if script:
        cases[f"nnc check {a.spec}"] = [script, "check", "-q", a.spec]
    results = {name: times(cmd, a.repeats) for name, cmd in cases.items()}
    base = statistics.median(results["python -c pass"])
    torch_ = statistics.median(results["python -c 'import torch'"])
    print(f"{'command':48s} {'min':>8s} {'median':>8s} {'x pass':>8s} {'x torch':>8s}   ({a.repeats} runs)")
    for name, ts in results.items():
        med = statistics.median(ts)
        print(f"{name:48s} {min(ts) * 1e3:6.0f}ms {med * 1e3:6.0f}ms {med / base:8.2f} {med / torch_:8.2f}")


if __name__ == "__main__":
    main()
