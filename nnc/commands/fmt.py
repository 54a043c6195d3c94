"""`nnc fmt FILE...`: rewrite specs in the canonical layout (compiler/format.py); `--check`
changes nothing and exits 1 with a diff when a file would change; `-` reads standard input and
writes the result to standard output. A file with errors is left as it is, its errors printed."""

from __future__ import annotations

import sys
from pathlib import Path

from nnc.commands.options import color, usage
from nnc.diagnostics import EXIT_USER, NncError, render_all


def _paths(given: list[str]) -> list[str]:
    """The files named, a folder standing for the .nnspec files under it."""
    out = []
    for g in given:
        p = Path(g)
        if g != "-" and p.is_dir():
            found = sorted(str(f) for f in p.rglob("*.nnspec"))
            if not found:
                raise usage(f"{g}: a folder with no .nnspec file in it")
            out += found
        else:
            out.append(g)
    return out


def run(args) -> int:
    import difflib

    from nnc.compiler.format import format_text
    from nnc.compiler.load import read_spec_text
    from nnc.files import write_atomic

    paths = _paths(args.files)
    if paths.count("-") > 1:
        raise usage("- (standard input) can be given once")
    failed = changed = 0
    for path in paths:
        name = "<stdin>" if path == "-" else path
        try:
            text = read_spec_text(path)
            new = format_text(text, name)
        except NncError as e:
            print(render_all(e.diagnostics, color(sys.stderr)), file=sys.stderr)
            print(f"{name}: left as it is (it has errors)", file=sys.stderr)
            failed += 1
            continue
        if args.check:
            if new != text:
                changed += 1
                sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                           f"{name} (as written)", f"{name} (nnc fmt)"))
        elif path == "-":
            sys.stdout.write(new)
        elif new != text:
            write_atomic(Path(path), new.encode(), "spec")
            changed += 1
            if not args.quiet:
                print(f"formatted {path}", file=sys.stderr)
    if args.check and changed and not args.quiet:
        print(f"{changed} file{'s' * (changed != 1)} would be reformatted (run nnc fmt on "
              f"{'them' if changed != 1 else 'it'})", file=sys.stderr)
    return EXIT_USER if failed or (args.check and changed) else 0


def register(sub) -> None:
    p = sub.add_parser("fmt", help="rewrite specs in the canonical layout (--check: only say what would change)")
    p.add_argument("files", nargs="+", metavar="FILE", help="spec files or folders of them; - reads standard input")
    p.add_argument("--check", action="store_true", help="change nothing; show a diff and exit 1 if a file would change")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=run)
