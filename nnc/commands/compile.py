"""`nnc compile SPEC_OR_CHECKPOINT`: standalone PyTorch source with the same parameter names."""

from __future__ import annotations

import sys
from pathlib import Path

from nnc.commands.options import add_set
from nnc.files import write_atomic


def run(args) -> int:
    from nnc.compiler.python_source import generate
    from nnc.diagnostics import NncError
    from nnc.runtime import artifacts

    text = generate(artifacts.load(args.artifact, overrides=tuple(args.set)).graph)
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if out.is_dir():
        raise NncError(f"{out}: is a folder; give a file name for the source (e.g. {out / 'model.py'})")
    if not out.parent.is_dir():  # a typo in the folder is not a reason to create it
        raise NncError(f"{out}: cannot write the source (No such file or directory: {out.parent})")
    write_atomic(out, text.encode(), "source")  # a full disk never leaves half a module over the old one
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("compile", help="standalone PyTorch source for a spec or checkpoint (same parameter names)")
    p.add_argument("artifact", metavar="SPEC_OR_CHECKPOINT")
    p.add_argument("-o", "--output", metavar="MODEL.py", help="default: standard output")
    add_set(p, bare_specs_only=True)
    p.set_defaults(func=run)
