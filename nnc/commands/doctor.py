"""`nnc doctor SPEC`: the notes' sanity checks before a long run (exit 4 when one fails).

Each check's line is printed as soon as it completes; `--checks init,grad` runs a subset;
`--budget SECONDS` time-boxes each check on big models (0: no limit). `--json` prints one
object at the end, with NaN / infinity written as null (JSON has neither)."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from dataclasses import asdict

from nnc.commands.options import add_device, add_set, print_warnings
from nnc.diagnostics import EXIT_SANITY

SHORT = ("init", "reg", "overfit", "grad", "lr")  # runtime/doctor.py's SHORT, without importing torch here


def _checks(text: str) -> tuple[str, ...]:
    names = [w.strip() for w in text.split(",") if w.strip()]
    for w in names:
        if w not in SHORT:
            close = difflib.get_close_matches(w, SHORT, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise argparse.ArgumentTypeError(f"unknown check {w!r}{hint}; choose from {','.join(SHORT)}")
    if not names:
        raise argparse.ArgumentTypeError(f"no check named; choose from {','.join(SHORT)}")
    return tuple(dict.fromkeys(names))


def _finite(v):
    """The value with every NaN / infinity replaced by None, recursively."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _fmt(v, spec: str) -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


def _budget(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not v >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: no limit), got {text!r}")
    return v


def run(args) -> int:
    from nnc.compiler.checks import check
    from nnc.compiler.load import load_spec
    from nnc.runtime.device import pick_device
    from nnc.runtime.doctor import SHORT as METHODS
    from nnc.runtime.doctor import run_doctor

    graph = check(load_spec(args.spec, tuple(args.set)))
    print_warnings(graph)  # as nnc check and nnc train show them (a final softmax before cross_entropy...)
    chosen = tuple(METHODS[c] for c in args.checks)
    console = None
    if not args.json:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        console.print(f"nnc doctor {args.spec}: {len(chosen)} check{'s' * (len(chosen) != 1)}"
                      + (f", at most ~{args.budget:g} s each" if args.budget > 0 else ""))
        mark = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "skipped": "[yellow]skip[/]"}

        def show(c):
            console.print(f"{mark[c.status]}  [bold]{escape(c.name)}[/] ({c.seconds:.1f} s): {escape(c.summary)}")
            if "basis" in c.details:  # how the expected loss at init was computed
                console.print(f"      expected: {escape(c.details['basis'])}")
            sys.stdout.flush()

    checks = run_doctor(graph, device=str(pick_device(args.device)), checks=chosen, budget=args.budget,
                        on_check=None if args.json else show)
    failed = [c for c in checks if c.passed is False]
    if args.json:
        out = {"spec": args.spec, "passed": not failed,
               "checks": [{**asdict(c), "status": c.status} for c in checks]}
        print(json.dumps(_finite(out), allow_nan=False))
        return EXIT_SANITY if failed else 0
    from rich.table import Table

    grads = next((c for c in checks if c.name == "gradient check"), None)
    if grads is not None:
        g = Table(title="gradient check: worst relative error per tensor (>1e-2 wrong, >1e-4 uncomfortable, "
                        "<1e-7 happy; ~0: both gradients below the noise floor)", box=None)
        for col in ("tensor", "entries", "~0", "worst", "verdict"):
            g.add_column(col, justify="left" if col in ("tensor", "verdict") else "right")
        for r in grads.details["tensors"]:
            g.add_row(r["name"], str(r["entries"]), str(r["below_floor"]), f"{r['worst']:.2e}", r["verdict"])
        console.print(g)
    sweep = next((c for c in checks if c.name.startswith("lr sweep")), None)
    if sweep is not None and sweep.details.get("rows"):
        sign = {"exploded": "x", "down": "v", "flat": "-"}
        console.print("lr sweep: " + "  ".join(f"{r['lr']:.0e}:{sign[r['status']]}{_fmt(r['end'], '.2f')}"
                                               for r in sweep.details["rows"])
                      + "   (v: goes down, -: does not, x: exploded)")
    skipped = sum(c.passed is None for c in checks)
    console.print(f"{sum(c.passed is True for c in checks)} of {len(checks)} checks passed"
                  + (f", {skipped} skipped or inconclusive" if skipped else ""))
    return EXIT_SANITY if failed else 0


def register(sub) -> None:
    p = sub.add_parser("doctor", help="sanity checks before training: loss at init, overfitting, gradient check, lr sweep")
    p.add_argument("spec", metavar="SPEC")
    add_set(p)
    add_device(p, default="cpu")
    p.add_argument("--checks", type=_checks, default=SHORT, metavar="LIST",
                   help=f"comma-separated subset of {','.join(SHORT)} (default: all, in that order)")
    p.add_argument("--budget", type=_budget, default=60.0, metavar="SECONDS",
                   help="time box per check on big models: fewer examples / steps / entries, reported as such "
                        "(0: no limit; default 60)")
    p.add_argument("--json", action="store_true", help="one JSON object with every check and its numbers")
    p.set_defaults(func=run)
