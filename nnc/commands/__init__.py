"""One module per command family beyond check/show; each has `register(subparsers)`.

Handlers import their implementation lazily so that `nnc check` never imports torch.
"""

from __future__ import annotations

import importlib

MODULES: tuple[str, ...] = ("train", "doctor", "search", "export")

REGISTER = [importlib.import_module(f"nnc.commands.{m}").register for m in MODULES]
