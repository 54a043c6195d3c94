"""`nnc specs`: the spec library installed with nnc (name, parameters, description); any of its
names can stand where a spec path is expected, and `nnc new NAME --from SPEC` copies one."""

from __future__ import annotations

import json


def run(args) -> int:
    from pathlib import Path

    from nnc.compiler.checks import check
    from nnc.compiler.library import description, library
    from nnc.compiler.load import load_text

    rows = []
    for name, path in library().items():
        text = Path(path).read_text()
        graph = check(load_text(text, path))
        rows.append({"name": name, "model": graph.spec.model.name, "params": graph.n_params,
                     "input": str(graph.spec.model.input), "description": description(text), "path": path})
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col, just in (("name", "left"), ("params", "right"), ("input", "left"), ("description", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", r["input"], r["description"])
    console = Console(highlight=False)
    console.print(table)
    console.print(f"\nin {Path(rows[0]['path']).parent if rows else '(none)'}: a name stands for its spec where no "
                  "such file exists (nnc show alexnet); nnc new NAME --from alexnet writes a copy to edit",
                  markup=False)
    return 0


def register(sub) -> None:
    p = sub.add_parser("specs", help="list the spec library installed with nnc")
    p.add_argument("--json", action="store_true", help="one JSON list: name, model, params, input, description, path")
    p.set_defaults(func=run)
