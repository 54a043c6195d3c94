"""`nnc check SPEC` start-up against its floor, the imports it cannot avoid: whole processes
`nnc check specs/alexnet.nnspec` vs `python -c "import lark, pydantic"`, alternating, median of
the paired ratios. Goal tracked: <= 1.5x. Plus `python -X importtime -m nnc.cli check SPEC`
grouped by top-level package.

    python bench/check_startup.py [--spec specs/alexnet.nnspec] [--pairs 10] [--top 15]

(bench/check_time.py compares the same command with `python -c pass` and `import torch` as
separate series; this one pairs each run with the floor run next to it.)
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/alexnet.nnspec")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    script = shutil.which("nnc", path=str(Path(sys.executable).parent)) or shutil.which("nnc")
    check = [script, "check", "-q", a.spec] if script else [sys.executable, "-m", "nnc.cli", "check", "-q", a.spec]
    floor = [sys.executable, "-c", "import lark, pydantic"]
    wall(check), wall(floor)  # warm-up
    rows = []
    for i in range(a.pairs):
        if i % 2 == 0:
            c, f = wall(check), wall(floor)
        else:
            f, c = wall(floor), wall(check)
        rows.append((c, f))
    ratios = [c / f for c, f in rows]
    q = statistics.quantiles(ratios, n=4)
    print(f"`{' '.join(Path(check[0]).name if i == 0 else x for i, x in enumerate(check))}` vs "
          f"`python -c \"import lark, pydantic\"`, {a.pairs} alternating pairs")
    print(f"median ms: nnc check {1e3 * statistics.median(c for c, _ in rows):.0f}, "
          f"import lark, pydantic {1e3 * statistics.median(f for _, f in rows):.0f}")
    print(f"ratio: {statistics.median(ratios):.2f} median of the paired ratios (quartiles {q[0]:.2f}-{q[2]:.2f}); "
          f"goal <= 1.5: {'met' if statistics.median(ratios) <= 1.5 else 'not met'}")

    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "nnc.cli", "check", "-q", a.spec],
                       capture_output=True, text=True, cwd=ROOT)
    by_pkg, mods = defaultdict(int), []
    for line in p.stderr.splitlines():
        m = LINE.match(line)
        if m:
            name, self_us = m.group(4), int(m.group(1))
            by_pkg[name.split(".")[0]] += self_us
            mods.append((name, self_us, int(m.group(2))))
    total = sum(by_pkg.values())
    print(f"\npython -X importtime -m nnc.cli check -q {a.spec}: {len(mods)} imports, {total / 1e3:.0f} ms self time in all")
    for k, v in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:a.top]:
        print(f"  {k:24s} {v / 1e3:6.0f} ms")
    print("slowest single modules (self ms, cumulative ms):")
    for name, s, c in sorted(mods, key=lambda r: -r[1])[:a.top]:
        print(f"  {name:48s} {s / 1e3:6.1f} {c / 1e3:7.1f}")
    heavy = [m for m in ("torch", "numpy", "onnx", "rich", "sklearn") if m in by_pkg]
    print(f"heavy packages imported: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
