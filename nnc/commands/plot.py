"""`nnc plot RUN`: draw a run directory's pictures (loss, accuracy, the monitors' dashboard,
the first layer's filters) from its files: after `nnc train --plots off`, or again."""

from __future__ import annotations


def run(args) -> int:
    from nnc.runtime.plots import redraw

    for p in redraw(args.run):
        print(f"plot: {p}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("plot", help="draw a run directory's pictures from its metrics and checkpoint")
    p.add_argument("run", metavar="RUN_DIR")
    p.set_defaults(func=run)
