"""`nnc doctor SPEC`: the notes' sanity checks before a long run (exit 4 when one fails).

`--json` prints one object, with NaN / infinity written as null (JSON has neither)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

from nnc.compiler.diagnostics import EXIT_SANITY


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


def cmd_doctor(args) -> int:
    from nnc.compiler.shapes import check
    from nnc.compiler.spec import load_spec
    from nnc.runtime.doctor import run_doctor
    from nnc.runtime.train import pick_device

    graph = check(load_spec(args.spec, tuple(args.set)))
    checks = run_doctor(graph, device=str(pick_device(args.device)))
    failed = [c for c in checks if not c.passed]
    if args.json:
        out = {"spec": args.spec, "passed": not failed, "checks": [asdict(c) for c in checks]}
        print(json.dumps(_finite(out), allow_nan=False))
        return EXIT_SANITY if failed else 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title=f"nnc doctor {args.spec}", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("measured")
    for c in checks:
        table.add_row(c.name, "[green]pass[/]" if c.passed else "[red]FAIL[/]", escape(c.summary))
    console.print(table)
    for c in checks:
        if "basis" in c.details:  # how the expected loss at init was computed
            console.print(f"{c.name}, expected: {escape(c.details['basis'])}")
    grads = next((c for c in checks if c.name == "gradient check"), None)
    grads = grads.details["tensors"] if grads is not None else []
    g = Table(title="gradient check: worst relative error per tensor (>1e-2 wrong, >1e-4 uncomfortable, "
                    "<1e-7 happy; ~0: both gradients below the noise floor)", box=None)
    for col in ("tensor", "entries", "~0", "worst", "verdict"):
        g.add_column(col, justify="left" if col in ("tensor", "verdict") else "right")
    for r in grads:
        g.add_row(r["name"], str(r["entries"]), str(r["below_floor"]), f"{r['worst']:.2e}", r["verdict"])
    if grads:
        console.print(g)
    sweep = next((c for c in checks if c.name.startswith("lr sweep")), None)
    if sweep is not None and sweep.details.get("rows"):
        sign = {"exploded": "x", "down": "v", "flat": "-"}
        console.print("lr sweep: " + "  ".join(f"{r['lr']:.0e}:{sign[r['status']]}{_fmt(r['end'], '.2f')}"
                                               for r in sweep.details["rows"])
                      + "   (v: goes down, -: does not, x: exploded)")
    console.print(f"{len(checks) - len(failed)} of {len(checks)} checks passed")
    return EXIT_SANITY if failed else 0


def register(sub) -> None:
    p = sub.add_parser("doctor", help="sanity checks before training: loss at init, overfitting, gradient check, lr sweep")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field (repeatable)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("--json", action="store_true", help="one JSON object with every check and its numbers")
    p.set_defaults(func=cmd_doctor)
