"""`nnc new NAME --from SPEC`: a copy of a library spec (or any spec file) to edit, as NAME.nnspec."""

from __future__ import annotations

import sys
from pathlib import Path

from nnc.commands.options import usage

DEFAULT = "digits_mlp"  # trains in seconds on data that ships with scikit-learn


def run(args) -> int:
    from nnc.compiler.library import library, resolve
    from nnc.compiler.load import read_spec_text
    from nnc.files import write_atomic

    out = Path(args.name if args.name.endswith(".nnspec") else args.name + ".nnspec")
    if out.exists():
        raise usage(f"{out} exists already: nnc new writes only new files (choose another NAME)")
    source = resolve(args.source)
    if source == args.source and not Path(source).exists():
        raise usage(f"--from {args.source}: no such file, and no library spec of that name "
                    f"(the library: {', '.join(library())})")
    text = read_spec_text(source)
    write_atomic(out, text.encode(), "spec")
    print(f"wrote {out}, a copy of {args.source}: edit it, then `nnc check {out}` and `nnc train {out}`",
          file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("new", help="start a spec from the library (or another spec): NAME.nnspec to edit")
    p.add_argument("name", metavar="NAME", help="the new file (.nnspec is added when missing)")
    p.add_argument("--from", dest="source", default=DEFAULT, metavar="SPEC",
                   help=f"a library name (nnc specs lists them) or a spec file (default {DEFAULT})")
    p.set_defaults(func=run)
