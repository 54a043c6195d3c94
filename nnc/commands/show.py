"""`nnc show SPEC`: the layer listing (shapes, params, FLOPs, init); never imports torch."""

from __future__ import annotations

import json

from nnc.commands.options import add_set, print_warnings


def run(args) -> int:
    from nnc.compiler.checks import check
    from nnc.compiler.listing import listing_json, print_listing
    from nnc.compiler.load import load_spec

    graph = check(load_spec(args.spec, tuple(args.set)))
    if args.json:
        print(json.dumps(listing_json(graph, resolved=args.resolved), indent=2))
    else:
        print_warnings(graph)
        print_listing(graph, resolved=args.resolved)
    return 0


def register(sub) -> None:
    p = sub.add_parser("show", help="the layer listing: shapes, params, FLOPs, init")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.add_argument("--resolved", action="store_true", help="also every section with its defaults filled in")
    add_set(p)
    p.set_defaults(func=run)
