"""`nnc check SPEC...`: parse, validate and shape-check specs; errors with line:col (never imports torch)."""

from __future__ import annotations

import sys

from nnc.commands.options import add_set, color, print_warnings
from nnc.diagnostics import EXIT_USER, NncError, render_all


def run(args) -> int:
    from nnc.compiler.checks import check
    from nnc.compiler.load import load_spec
    from nnc.compiler.overrides import split_override

    for text in args.set:  # misuse is reported once, not once per spec
        split_override(text)
    failed = 0
    report = {"ok": True, "specs": [], "diagnostics": []}
    for path in args.specs:
        try:
            graph = check(load_spec(path, tuple(args.set)))
        except NncError as e:
            failed += 1
            if args.json:
                report["specs"].append({"file": "<stdin>" if path == "-" else path, "ok": False})
                report["diagnostics"] += [d.as_json() for d in e.diagnostics]
            else:
                print(render_all(e.diagnostics, color(sys.stderr)), file=sys.stderr)
            continue
        from nnc.compiler.data_plan import describe

        if args.json:
            report["specs"].append({"file": graph.spec.document.name, "ok": True, "model": graph.spec.model.name,
                                    "params": graph.n_params, "flops": graph.flops, "data": describe(graph.spec)})
            report["diagnostics"] += [d.as_json() for d in graph.warnings]
            continue
        print_warnings(graph)
        if not args.quiet:
            from nnc.compiler.listing import flops

            print(f"{graph.spec.document.name}: ok ({graph.spec.model.name}: {graph.n_params:,} parameters, "
                  f"{flops(graph.flops)}FLOPs per example)")
            print(f"  {describe(graph.spec)}")
    if args.json:
        import json

        report["ok"] = not failed
        print(json.dumps(report))
    return EXIT_USER if failed else 0


def register(sub) -> None:
    p = sub.add_parser("check", help="parse, validate and shape-check specs (errors with line:col)")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.add_argument("--json", action="store_true", help="print one JSON object: each spec, and every error and warning "
                                                       "with its file, range (1-based, end exclusive), severity, message, "
                                                       "help and quick fix")
    add_set(p)
    p.set_defaults(func=run)
