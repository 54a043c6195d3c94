"""`nnc eval CHECKPOINT`: loss, accuracy and confusion matrix on the checkpoint's own split."""

from __future__ import annotations

import json

from nnc.commands.options import add_allow_read, add_device


def run(args) -> int:
    from nnc.runtime.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.split, args.device, tuple(args.allow_read))
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from nnc.diagnostics import printable

    console = Console(highlight=False)
    acc = result["accuracy"]
    console.print(f"{args.split} split: {result['n']} examples, loss {result['loss']:.4f}"
                  + (f", accuracy {100 * acc:.2f}%" if acc is not None else ""))
    if result["confusion"] is not None:
        # class names come from the checkpoint: no escape sequence or rich markup of theirs reaches the terminal
        names = [escape(printable(str(n)[:8])) for n in result["classes"] or range(len(result["confusion"]))]
        table = Table(title="confusion matrix (rows: true class, columns: predicted)", box=None)
        table.add_column("")
        for n in names:
            table.add_column(n, justify="right")
        for n, row in zip(names, result["confusion"]):
            table.add_row(n, *[str(v) if v else "." for v in row])
        console.print(table)
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="loss, accuracy and confusion matrix of a checkpoint on its test split")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    add_device(p)
    add_allow_read(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
