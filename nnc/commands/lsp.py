"""`nnc lsp`: the language server for .nnspec files, over standard input and output (editors
start it: docs/editors.md). Diagnostics, hover, completion, go to definition, the outline,
formatting and the model's size, from nnc's own front end; it never imports torch."""

from __future__ import annotations


def run(args) -> int:
    from nnc.language_server import serve

    serve()
    return 0


def register(sub) -> None:
    p = sub.add_parser("lsp", help="the language server for editors (LSP over standard input and output)")
    p.add_argument("--stdio", action="store_true", help="talk over standard input and output (the default and only way)")
    p.set_defaults(func=run)
