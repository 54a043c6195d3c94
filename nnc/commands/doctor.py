"""`nnc doctor SPEC`: the notes' sanity checks before a long run (exit 4 when one fails)."""

from __future__ import annotations

import json
from dataclasses import asdict

from nnc.compiler.diagnostics import EXIT_SANITY


def cmd_doctor(args) -> int:
    from nnc.compiler.shapes import check
    from nnc.compiler.spec import load_spec
    from nnc.runtime.doctor import run_doctor
    from nnc.runtime.train import pick_device

    graph = check(load_spec(args.spec, tuple(args.set)))
    checks = run_doctor(graph, device=str(pick_device(args.device)))
    failed = [c for c in checks if not c.passed]
    if args.json:
        print(json.dumps({"spec": args.spec, "passed": not failed, "checks": [asdict(c) for c in checks]}))
        return EXIT_SANITY if failed else 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title=f"nnc doctor {args.spec}", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("measured")
    for c in checks:
        table.add_row(c.name, "[green]pass[/]" if c.passed else "[red]FAIL[/]", c.summary)
    console.print(table)
    grads = next(c for c in checks if c.name == "gradient check").details["tensors"]
    g = Table(title="gradient check: worst relative error per tensor (>1e-2 wrong, >1e-4 uncomfortable, "
                    "<1e-7 happy)", box=None)
    for col in ("tensor", "entries", "worst", "verdict"):
        g.add_column(col, justify="right" if col in ("entries", "worst") else "left")
    for r in grads:
        g.add_row(r["name"], str(r["entries"]), f"{r['worst']:.2e}", r["verdict"])
    console.print(g)
    sweep = next(c for c in checks if c.name.startswith("lr sweep")).details["rows"]
    console.print("lr sweep: " + "  ".join(
        f"{r['lr']:.0e}:{'x' if r['exploded'] else ('v' if r['down'] else '-')}{r['end']:.2f}" for r in sweep)
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
