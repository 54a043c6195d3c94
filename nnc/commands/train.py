"""`nnc train` and `nnc eval`."""

from __future__ import annotations

import json
import sys


def cmd_train(args) -> int:
    from nnc.compiler.shapes import check
    from nnc.compiler.spec import load_spec
    from nnc.runtime.checkpoint import load

    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.resume:
        from pathlib import Path

        from nnc.compiler.spec import load_text

        if args.spec or args.set or args.seed is not None:
            print("nnc train: error: --resume continues a run as it was: give no SPEC, --set or --seed "
                  "(--epochs N extends it)", file=sys.stderr)
            return 2
        ck = load(Path(args.resume) / "last.safetensors")
        extend = (f"train.epochs={args.epochs}",) if args.epochs is not None else ()
        spec = load_text(ck.spec_text, ck.spec_name, ck.overrides + extend)
        out = args.out or args.resume
        if extend and not args.quiet:
            print(f"continuing {args.resume} to {args.epochs} epochs (it was at epoch {ck.info.get('epoch')}); "
                  "a schedule over the run's length (cosine, linear warm-up in steps) follows the new length",
                  file=sys.stderr)
    else:
        if not args.spec:
            print("nnc train: error: give a SPEC, or --resume RUN_DIR", file=sys.stderr)
            return 2
        spec = load_spec(args.spec, tuple(overrides))
        out = args.out or _default_out(args.spec)
    graph = check(spec)
    if graph.warnings and not args.quiet:
        from nnc.compiler.diagnostics import render_all

        print(render_all(list(graph.warnings)), file=sys.stderr)
    from nnc.runtime.train import train

    try:
        final = train(graph, out, device=args.device, resume=args.resume, quiet=args.quiet or args.json)
    except KeyboardInterrupt:
        print(f"nnc: interrupted; the last checkpoint is {out}/last.safetensors: continue with "
              f"nnc train --resume {out}", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(final))
    else:
        acc = final["test_accuracy"]
        print(f"test loss {final['test_loss']:.4f}" + (f", test accuracy {100 * acc:.2f}%" if acc is not None else "")
              + f" (best epoch {final['best_epoch']} of {final['epochs']}, {final['time']:.1f} s)")
        print(f"best checkpoint: {final['best_checkpoint']}")
        for p in final["plots"]:
            print(f"plot: {p}")
    return 0


def _positive(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _default_out(spec_path: str) -> str:
    from pathlib import Path

    return str(Path("runs") / Path(spec_path).stem)


def cmd_eval(args) -> int:
    from nnc.runtime.evaluate_cli import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.split, args.device)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    acc = result["accuracy"]
    console.print(f"{args.split} split: {result['n']} examples, loss {result['loss']:.4f}"
                  + (f", accuracy {100 * acc:.2f}%" if acc is not None else ""))
    if result["confusion"] is not None:
        names = result["classes"] or [str(i) for i in range(len(result["confusion"]))]
        table = Table(title="confusion matrix (rows: true class, columns: predicted)", box=None)
        table.add_column("")
        for n in names:
            table.add_column(n[:8], justify="right")
        for n, row in zip(names, result["confusion"]):
            table.add_row(n[:8], *[str(v) if v else "." for v in row])
        console.print(table)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a spec's model on its data (a babysat run)")
    p.add_argument("spec", nargs="?", metavar="SPEC")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<spec name>)")
    p.add_argument("--epochs", type=_positive, help="override train.epochs (with --resume: extend the run)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set optimizer.lr=3e-4 (repeatable)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the final metrics")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="loss, accuracy and confusion matrix of a checkpoint on its test split")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)
