"""One module per command, each with `register(subparsers)` and `run(args)`.

The modules import only argparse-level things at the top; each `run` imports its implementation
(and torch, where it needs it), so that `nnc check` and `nnc show` never import torch.
"""

from __future__ import annotations

import importlib

COMMANDS: tuple[str, ...] = ("check", "show", "train", "eval", "doctor", "search", "ensemble", "export", "infer",
                             "compile", "fmt", "lsp", "specs", "new", "plot", "bench")


def register_all(sub, names: tuple[str, ...] = COMMANDS) -> None:
    for name in names:
        importlib.import_module(f"nnc.commands.{name}").register(sub)
