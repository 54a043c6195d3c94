"""`nnc check SPEC` start-up against its floor, the imports it cannot avoid: whole processes
`nnc check specs/alexnet.nnspec` vs `python -c "import lark, pydantic"`, alternating, median of
the paired ratios. Goal tracked: <= 1.5x. Also timed beside them: `from pydantic import
BaseModel` (pydantic's `__init__` is lazy, so the floor above does not import BaseModel, which
any pydantic user pays). Plus `python -X importtime -m nnc.cli check SPEC`, the smallest self
time of each module over a few runs, grouped by top-level package.

    python bench/check_startup.py [--spec specs/alexnet.nnspec] [--pairs 10] [--top 15] [--source]
                                  [--against REF] [--command show]

`--against REF` (e.g. main) also runs nnc as it was at git REF in the same rounds, so a change
is measured before/after side by side: each tree is laid out as the installed package
(nnc/compiler, nnc/grammar, ...) in a temporary folder and run as `python -m nnc.cli` from
there, the working tree too. Child CPU time is printed beside wall time: on a shared machine
it moves less than wall time.

Bytecode: an installed nnc has its .pyc files (pip compiles them), and an editable checkout
writes them on its first run, unless PYTHONDONTWRITEBYTECODE is set, as it is on the team's VM:
there every run of nnc compiles its ~40 source files again (~50 ms), while lark and pydantic
come with theirs. So both commands run with PYTHONDONTWRITEBYTECODE unset and a private
PYTHONPYCACHEPREFIX (a temporary folder, filled by the warm-up runs; the checkout is not
written to). `--source` keeps this shell's setting instead.

(bench/check_time.py compares the same command with `python -c pass` and `import torch` as
separate series; this one pairs each run with the floor runs next to it.)
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


# the package's folders in the checkout -> where the installed package has them (pyproject's package-dir)
LAYOUT = {"nnc": "nnc", "compiler": "nnc/compiler", "grammar": "nnc/grammar", "runtime": "nnc/runtime",
          "specs": "nnc/specs"}


def wall(cmd: list[str], env: dict, cwd: Path = ROOT) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `cmd`."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=cwd, env=env)
    t = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t, cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime


def lay_out(ref: str | None, into: Path) -> Path:
    """The package as installed, from git `ref` (None: the working tree), under `into`."""
    src = into / "src"
    if ref is None:
        for d in LAYOUT:
            shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        data = subprocess.run(["git", "archive", ref, *LAYOUT], check=True, capture_output=True, cwd=ROOT).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(src)
    for d, where in LAYOUT.items():
        shutil.copytree(src / d, into / "pkg" / where, dirs_exist_ok=True)
    return into / "pkg"


def environment(source: bool, cache: str) -> tuple[dict, str]:
    env = dict(os.environ)
    if source:
        how = "bytecode as this shell has it" + (" (PYTHONDONTWRITEBYTECODE set: nnc's sources compiled every run)"
                                                 if env.get("PYTHONDONTWRITEBYTECODE") else "")
        return env, how
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache
    return env, "bytecode compiled once into a private cache, as an installed nnc has it"


def pairs(cmds: dict[str, tuple[list[str], dict, Path]], n: int) -> dict[str, list[tuple[float, float]]]:
    """`n` rounds of every command (argv, environment, folder), the order rotated each round."""
    names = list(cmds)
    for name in names:  # warm-up: the OS's file cache, and the bytecode cache when it is private
        wall(*cmds[name])
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(n):
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(wall(*cmds[name]))
    return times


def side_by_side(t: dict[str, list[tuple[float, float]]], ref: str, what: str) -> None:
    print(f"\n{what}, each tree run as `python -m nnc.cli` from its package layout (median ms, wall / child CPU):")
    for name in ("this tree", ref, "floor"):
        w, c = (1e3 * statistics.median(x[k] for x in t[name]) for k in (0, 1))
        print(f"  {name:12s} {w:6.0f} {c:6.0f}")
    for k, unit in ((0, "wall"), (1, "CPU")):
        r = [a[k] / b[k] for a, b in zip(t["this tree"], t[ref])]
        q = statistics.quantiles(r, n=4)
        f = statistics.median(a[k] / b[k] for a, b in zip(t["this tree"], t["floor"]))
        print(f"  this tree / {ref}, {unit}: {statistics.median(r):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f}); "
              f"this tree / floor {f:.2f}")


def importtime(spec: str, env: dict, runs: int) -> dict[str, tuple[int, int]]:
    """Module -> (self us, cumulative us), the smallest of `runs` runs (the least disturbed)."""
    best: dict[str, tuple[int, int]] = {}
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "nnc.cli", "check", "-q", spec],
                           check=True, capture_output=True, text=True, cwd=ROOT, env=env)
        for line in p.stderr.splitlines():
            if m := LINE.match(line):
                name, s, c = m.group(4), int(m.group(1)), int(m.group(2))
                best[name] = min(best.get(name, (s, c)), (s, c))
    return best


def report_imports(spec: str, mods: dict[str, tuple[int, int]], top: int, runs: int) -> None:
    by_pkg: dict[str, int] = defaultdict(int)
    for name, (s, _) in mods.items():
        by_pkg[name.split(".")[0]] += s
    total = sum(by_pkg.values())
    print(f"\npython -X importtime -m nnc.cli check -q {spec}, least of {runs} runs: {len(mods)} imports, "
          f"{total / 1e3:.0f} ms self time in all, nnc's own modules {by_pkg['nnc'] / 1e3:.0f} ms")
    for k, v in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {k:24s} {v / 1e3:6.1f} ms")
    print("slowest single modules (self ms, cumulative ms):")
    for name, (s, c) in sorted(mods.items(), key=lambda r: -r[1][0])[:top]:
        print(f"  {name:48s} {s / 1e3:6.1f} {c / 1e3:7.1f}")
    heavy = [m for m in ("torch", "numpy", "onnx", "rich", "sklearn") if m in by_pkg]
    print(f"heavy packages imported: {', '.join(heavy) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/alexnet.nnspec")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--importtime-runs", type=int, default=5)
    ap.add_argument("--source", action="store_true", help="keep this shell's bytecode setting")
    ap.add_argument("--against", metavar="REF", help="also time nnc at this git ref, side by side")
    ap.add_argument("--command", default="check", choices=("check", "show"), help="with --against: the command")
    a = ap.parse_args()
    script = shutil.which("nnc", path=str(Path(sys.executable).parent)) or shutil.which("nnc")
    check = [script, "check", "-q", a.spec] if script else [sys.executable, "-m", "nnc.cli", "check", "-q", a.spec]
    shown = " ".join(Path(check[0]).name if i == 0 else x for i, x in enumerate(check))
    floor = [sys.executable, "-c", "import lark, pydantic"]
    with tempfile.TemporaryDirectory(prefix="nnc-pyc-") as cache:
        env, how = environment(a.source, cache)
        cmds = {"check": (check, env, ROOT), "floor": (floor, env, ROOT),
                "basemodel": ([sys.executable, "-c", "import lark; from pydantic import BaseModel"], env, ROOT)}
        t = {k: [w for w, _ in v] for k, v in pairs(cmds, a.pairs).items()}
        mods = importtime(a.spec, env, a.importtime_runs)
        if a.against:
            argv = [sys.executable, "-m", "nnc.cli", a.command, *(["-q"] if a.command == "check" else []),
                    str(ROOT / a.spec)]
            trees = {"this tree": lay_out(None, Path(cache) / "tree"), a.against: lay_out(a.against, Path(cache) / "ref")}
            cmp = {name: (argv, {**env, "PYTHONPATH": str(pkg)}, pkg) for name, pkg in trees.items()}
            cmp["floor"] = (floor, env, ROOT)
            both = pairs(cmp, a.pairs)
    ratios = [c / f for c, f in zip(t["check"], t["floor"])]
    ratios_bm = [c / f for c, f in zip(t["check"], t["basemodel"])]
    q = statistics.quantiles(ratios, n=4)
    med = {k: 1e3 * statistics.median(v) for k, v in t.items()}
    print(f"`{shown}` vs `python -c \"import lark, pydantic\"`, {a.pairs} rounds, order rotated; {how}")
    print(f"median ms: nnc check {med['check']:.0f}, import lark, pydantic {med['floor']:.0f} "
          f"(import lark; from pydantic import BaseModel {med['basemodel']:.0f})")
    print(f"ratio: {statistics.median(ratios):.2f} median of the paired ratios (quartiles {q[0]:.2f}-{q[2]:.2f}); "
          f"goal <= 1.5: {'met' if statistics.median(ratios) <= 1.5 else 'not met'}; "
          f"against the BaseModel floor {statistics.median(ratios_bm):.2f}")
    report_imports(a.spec, mods, a.top, a.importtime_runs)
    if a.against:
        side_by_side(both, a.against, f"nnc {a.command} {a.spec}: this tree vs {a.against}")


if __name__ == "__main__":
    main()
