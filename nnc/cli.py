"""The `nnc` command line: parse options, call one library function, print, exit.

Exit codes (DESIGN.md): 0 ok, 1 user error, 2 command-line misuse, 3 training diverged,
4 a sanity check failed. A user error never prints a traceback; anything else is a bug
and says so. `check` and `show` must not import torch: keep imports inside handlers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nnc.diagnostics import EXIT_USER, NncError, render_all


def _color(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _print_warnings(graph) -> None:
    if graph.warnings:
        print(render_all(list(graph.warnings), _color(sys.stderr)), file=sys.stderr)


# ---------------------------------------------------------------- check / show


def cmd_check(args) -> int:
    from nnc.compiler.checks import check
    from nnc.compiler.load import load_spec
    from nnc.compiler.overrides import split_override

    for text in args.set:  # misuse is reported once, not once per spec
        split_override(text)
    failed = 0
    for path in args.specs:
        try:
            graph = check(load_spec(path, tuple(args.set)))
        except NncError as e:
            print(render_all(e.diagnostics, _color(sys.stderr)), file=sys.stderr)
            failed += 1
            continue
        _print_warnings(graph)
        if not args.quiet:
            from nnc.compiler.listing import flops

            print(f"{graph.spec.source.name}: ok ({graph.spec.model.name}: {graph.n_params:,} parameters, "
                  f"{flops(graph.flops)}FLOPs per example)")
    return EXIT_USER if failed else 0


def cmd_show(args) -> int:
    from nnc.compiler.checks import check
    from nnc.compiler.listing import listing_json, print_listing
    from nnc.compiler.load import load_spec

    graph = check(load_spec(args.spec, tuple(args.set)))
    if args.json:
        print(json.dumps(listing_json(graph, resolved=args.resolved), indent=2))
    else:
        _print_warnings(graph)
        print_listing(graph, resolved=args.resolved)
    return 0


# ---------------------------------------------------------------- the parser


def _spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set optimizer.lr=3e-4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    from nnc.version import __version__

    parser = argparse.ArgumentParser(prog="nnc", description="Define, train and ship neural networks from .nnspec files.")
    parser.add_argument("--version", action="version", version=f"nnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("check", help="parse, validate and shape-check specs (errors with line:col)")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    _spec_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("show", help="the layer listing: shapes, params, FLOPs, init")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.add_argument("--resolved", action="store_true", help="also every section with its defaults filled in")
    _spec_options(p)
    p.set_defaults(func=cmd_show)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list = []  # (subparsers) -> None, appended by the command modules below


def _load_extra_commands() -> None:
    """Commands whose argparse setup lives beside their implementation (imported lazily
    inside their handlers, so `nnc check` stays torch-free)."""
    from nnc import commands

    if not _EXTRA_COMMANDS:  # main() may run more than once in a process (tests, notebooks)
        _EXTRA_COMMANDS.extend(commands.REGISTER)


def main(argv: list[str] | None = None) -> int:
    _load_extra_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except NncError as e:
        print(render_all(e.diagnostics, _color(sys.stderr)), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("nnc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit as e:  # rich's answer to a closed pipe (`nnc doctor ... | head`) is exit 1
        if isinstance(e.__context__, BrokenPipeError):
            return 0
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
