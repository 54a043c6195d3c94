"""The `nnc` command line: parse options, call one command's `run`, print, exit.

Exit codes: 0 ok, 1 user error (the spec, data or checkpoint given is wrong), 2 command-line
misuse, 3 training diverged, 4 a sanity check failed. A user error never prints a traceback;
anything else is a bug and says so. The commands live in nnc/commands/, one module each.
"""

from __future__ import annotations

import argparse
import os
import sys

from nnc.commands.options import color
from nnc.diagnostics import NncError, render_all


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the command line, only its command's subparser when it names one (each
    one registered costs start-up time, and `nnc check` is meant to answer at once)."""
    from nnc.commands import COMMANDS, register_all
    from nnc.version import __version__

    parser = argparse.ArgumentParser(prog="nnc", description="Define, train and ship neural networks from .nnspec files.")
    parser.add_argument("--version", action="version", version=f"nnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    named = argv[0] if argv and argv[0] in COMMANDS else None
    register_all(sub, (named,) if named else COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args) or 0
    except NncError as e:
        print(render_all(e.diagnostics, color(sys.stderr)), file=sys.stderr)
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


def entry() -> None:
    """The `nnc` program (console script and `python -m nnc.cli`): main, then an exit that skips
    the interpreter's finalization, which takes ~1-2 s once torch (and torch._dynamo) are
    loaded. Every command has closed its files by the time main returns (checkpoints and logs
    are written atomically and closed); only the standard streams need flushing. `main` alone,
    as a library call, returns normally.

    Pydantic looks for plugins (entry points of every installed distribution) when it builds its
    first validator, ~5 ms of `nnc check`; nnc's own validation has no use for them. A
    PYDANTIC_DISABLE_PLUGINS the user set is kept."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `nnc ... | head`: the reader left; its exit status is the pipe's
        pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":  # pragma: no cover
    entry()
