"""`nnc train` and `nnc eval`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nnc.diagnostics import EXIT_USAGE, NncError


def cmd_train(args) -> int:
    from nnc.compiler.checks import check
    from nnc.compiler.load import load_spec
    from nnc.runtime.checkpoint import load

    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.resume:
        from nnc.compiler.load import load_text

        if args.spec or args.set or args.seed is not None:
            print("nnc train: error: --resume continues a run as it was: give no SPEC, --set or --seed "
                  "(--epochs N extends it)", file=sys.stderr)
            return 2
        if Path(args.resume).is_file():  # `--resume run/last.safetensors` names the run too
            if Path(args.resume).name != "last.safetensors":
                print(f"nnc train: error: --resume takes a run directory (it continues from its last.safetensors, "
                      f"which holds the optimizer state); got the file {args.resume}", file=sys.stderr)
                return 2
            args.resume = str(Path(args.resume).parent)
        ck = load(Path(args.resume) / "last.safetensors")
        done = ck.info.get("epoch", 0)
        if args.epochs is not None and args.epochs <= done:
            print(f"nnc train: error: {args.resume} is at epoch {done} already; --epochs {args.epochs} would not "
                  f"extend it (give more than {done})", file=sys.stderr)
            return 2
        extend = (f"train.epochs={args.epochs}",) if args.epochs is not None else ()
        kept = tuple(o for o in ck.overrides if not (extend and o.split("=", 1)[0].strip() == "train.epochs"))
        spec = load_text(ck.spec_text, ck.spec_name, kept + extend)
        out = args.out or args.resume
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            _check_fresh(out)
        if extend and not args.quiet:
            print(f"continuing {args.resume} to {args.epochs} epochs (it was at epoch {done}); "
                  "a schedule over the run's length (cosine, linear warm-up in steps) follows the new length",
                  file=sys.stderr)
    else:
        if not args.spec:
            print("nnc train: error: give a SPEC, or --resume RUN_DIR", file=sys.stderr)
            return 2
        spec = load_spec(args.spec, tuple(overrides))
        if args.out:
            _check_fresh(args.out)
        out = args.out or _default_out(args.spec, args.quiet)
    graph = check(spec)
    if graph.warnings and not args.quiet:
        from nnc.diagnostics import render_all

        print(render_all(list(graph.warnings)), file=sys.stderr)
    from nnc.runtime.train import train

    try:
        final = train(graph, out, device=args.device, resume=args.resume, quiet=args.quiet or args.json)
    except KeyboardInterrupt:
        if (Path(out) / "last.safetensors").is_file():
            print(f"nnc: interrupted; the last checkpoint is {out}/last.safetensors: continue with "
                  f"nnc train --resume {out}", file=sys.stderr)
        else:
            print("nnc: interrupted before the first checkpoint; nothing to resume", file=sys.stderr)
        return 130
    except NncError as e:  # a script reading --json gets its one line on failure too (divergence: exit 3)
        if args.json:
            print(json.dumps({"error": str(e), "exit": e.exit_code}))
        raise
    if args.json:
        print(json.dumps(final))
    else:
        acc = final["test_accuracy"]
        when = f"best epoch {final['best_epoch']} of {final['epochs']}, {final['time']:.1f} s"
        if final["test_loss"] is None:
            print(f"no test split (data test 0): nothing held out to score ({when})")
        else:
            print(f"test loss {final['test_loss']:.4f}" + (f", test accuracy {100 * acc:.2f}%" if acc is not None else "")
                  + f" ({when})")
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


def _holds_run(path: Path) -> bool:
    return any((path / f).exists() for f in ("last.safetensors", "metrics.jsonl"))


def _check_fresh(out: str) -> None:
    """A run never lands on top of another: their metrics, plots and TensorBoard events would mix."""
    if Path(out).exists() and not Path(out).is_dir():
        raise NncError(f"--out {out}: a file, not a folder", EXIT_USAGE)
    if _holds_run(Path(out)):
        raise NncError(f"--out {out} holds a run already: continue it with `nnc train --resume {out}`, "
                       "or choose another --out (nothing was written)", EXIT_USAGE)


def _default_out(spec_path: str, quiet: bool) -> str:
    """runs/<spec name>, or runs/<spec name>-2, -3 ... when earlier runs are there."""
    base = Path("runs") / Path(spec_path).stem
    out, n = base, 1
    while _holds_run(out) or (out.exists() and not out.is_dir()):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    if n > 1 and not quiet:
        print(f"run directory: {out} ({base} holds an earlier run)", file=sys.stderr)
    return str(out)


def cmd_eval(args) -> int:
    from nnc.runtime.evaluate import evaluate_checkpoint

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
