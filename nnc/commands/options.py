"""What several commands share: their common options, argparse types, and the one way to
report command-line misuse (exit 2)."""

from __future__ import annotations

import argparse
import os
import sys

from nnc.diagnostics import EXIT_USAGE, NncError, render_all


def usage(message: str) -> NncError:
    """Command-line misuse: `raise usage(...)` prints `nnc: error: ...` and exits 2."""
    return NncError(message, exit_code=EXIT_USAGE)


def add_set(p: argparse.ArgumentParser, bare_specs_only: bool = False) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field (bare specs only; repeatable)" if bare_specs_only else
                   "override a spec field, e.g. --set optimizer.lr=3e-4 (repeatable)")


def add_allow_read(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-read", action="append", default=[], metavar="PATH",
                   help="let a checkpoint's spec read data at PATH (a file, or any file under a folder); "
                        "needed where its own spec file is not here with the same text (runtime/reads.py)")


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=default)


def count(least: int = 1):
    """An argparse type: a whole number >= least (misuse is exit 2, as argparse reports it)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {n}")
        return n

    return parse


def color(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def print_warnings(graph) -> None:
    """A checked graph's warnings (a final softmax before cross_entropy, ...) on stderr."""
    if graph.warnings:
        print(render_all(list(graph.warnings), color(sys.stderr)), file=sys.stderr)
