"""`nnc search` (hyperparameter search over a spec's ranges) and `nnc ensemble`."""

from __future__ import annotations

import json
import sys


def _fmt(v) -> str:
    from nnc.compiler.values import format_value

    if isinstance(v, float):
        return f"{v:.3g}"
    return format_value(v)


def _state(row: dict) -> str:
    """complete, pruned@E (at epoch E), exploded@E (the 3x rule or NaN), failed (reason)."""
    if row["state"] == "exploded":
        return f"exploded@{(row['epochs_run'] or 0) + 1}"
    if row["state"] == "pruned":
        return f"pruned@{row['epochs_run']}"
    if row["state"] == "fail":
        return "failed" + (f" ({row['reason']})" if row["reason"] else "")
    return row["state"]


def _usage(message: str) -> int:
    print(f"nnc search: error: {message}", file=sys.stderr)
    return 2


INTERRUPTED = "interrupted; re-run the same command to continue"


def cmd_search(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from nnc.runtime.search import Config, search

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if stages not in (("coarse",), ("fine",), ("coarse", "fine")):  # fine narrows what coarse found: never first
        return _usage(f"--stages takes coarse, fine or coarse,fine; got {args.stages!r}")
    if args.coarse_epochs is not None and "coarse" not in stages:
        return _usage("--coarse-epochs sets the coarse stage's epochs, and --stages fine runs none")
    out = args.out or str(Path("runs") / f"search_{Path(args.spec).stem}")
    cfg = Config(args.spec, out, args.trials, args.epochs, args.coarse_epochs, stages, args.sampler, args.seed,
                 args.jobs, args.device)
    err = Console(stderr=True, highlight=False)

    def on_trial(row):
        if not args.quiet:
            v = f"{row['value']:.4f}" if row["value"] is not None else row["reason"] or row["state"]
            err.print(f"trial {row['number']:3d} [{row['stage']}] "
                      + ", ".join(f"{k}={_fmt(x)}" for k, x in row["params"].items()) + f": {v}",
                      soft_wrap=True, markup=False)

    res = search(cfg, on_trial)
    code = 130 if res.interrupted else 0
    if args.json:
        print(json.dumps({"metric": res.metric, "best": res.best, "best_spec": str(res.best_spec) if res.best_spec else None,
                          "plot": str(res.plot) if res.plot else None, "warnings": res.warnings,
                          "interrupted": res.interrupted, "trials": res.trials}))
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if res.interrupted:
            print(INTERRUPTED, file=sys.stderr)
        return code
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    for stage, epochs, params, done, note in res.stages:
        before = f" ({done} of {args.trials} trials done by an earlier run)" if done else ""
        console.print(f"{stage} stage: {epochs} epoch(s), " + ", ".join(f"{p.name} {p.describe()}" for p in params)
                      + before + (f" ({note})" if note else ""), soft_wrap=True, markup=False)
    names = [r.path for r in res.spec.search]
    table = Table(title=escape(f"{len(res.trials)} trial{'s' * (len(res.trials) != 1)}, by {res.metric} (study {Path(out) / 'study.db'})"))
    table.add_column("#", justify="right")  # the trial number (its run is DIR/trial_NNN)
    table.add_column("stage")
    for n in names:
        table.add_column(n, justify="right")
    table.add_column("epochs", justify="right")
    table.add_column(res.metric, justify="right")
    table.add_column("state")
    for row in res.trials:
        value = f"{row['value']:.4f}" if row["value"] is not None else (f"({row['last']:.4f})" if row["last"] is not None else "")
        table.add_row(str(row["number"]), row["stage"], *[_fmt(row["params"][n]) if n in row["params"] else "" for n in names],
                      str(row["epochs_run"] if row["epochs_run"] is not None else ""), value, escape(_state(row)))
    console.print(table)
    for w in res.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(w)}" if err.is_terminal else f"warning: {escape(w)}", soft_wrap=True)
    if res.best is None:
        print("nnc: error: no trial completed, so there is no best spec to write; the table says how each "
              "ended (exploded: lower the learning-rate range)", file=sys.stderr)
    else:
        console.print(f"best: trial {res.best['number']}, {res.metric} {res.best['value']:.4f}")
        console.print(f"best spec: {res.best_spec}", markup=False)
        console.print(f"plot: {res.plot}", markup=False)
    if res.interrupted:
        print(INTERRUPTED, file=sys.stderr)
        return code
    return 0 if res.best is not None else 1


def cmd_ensemble(args) -> int:
    from nnc.runtime.ensemble import evaluate_ensemble, export_onnx
    from nnc.runtime.export import check_out_path

    if args.output:
        check_out_path(args.output)  # before the evaluation, not after it
    res = evaluate_ensemble(args.checkpoints, args.split)
    if args.output:
        res["onnx"] = export_onnx(args.checkpoints, args.output, args.split)
    if args.json:
        print(json.dumps(res))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title=f"{args.split} split, {res['n']} examples")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    table.add_column("loss", justify="right")
    for m in res["members"]:
        table.add_row(m["checkpoint"], f"{100 * m['accuracy']:.2f}%", f"{m['loss']:.4f}")
    table.add_row("mean of members", f"{100 * res['mean_accuracy']:.2f}%", "", end_section=True)
    table.add_row(f"ensemble of {len(res['members'])}", f"{100 * res['accuracy']:.2f}%", f"{res['loss']:.4f}")
    console.print(table)
    if args.output:
        o = res["onnx"]
        console.print(f"wrote {o['path']} with {o['exporter']} (onnxruntime matches PyTorch on {o['checked_on']} "
                      f"{args.split} examples: max |diff| {o['max_abs_diff']:.2e})", soft_wrap=True)
    return 0


def _count(least: int):
    """An argparse type: a whole number >= least (misuse is exit 2, as argparse reports it)."""
    import argparse

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {n}")
        return n

    return parse


def register(sub) -> None:
    p = sub.add_parser("search", help="hyperparameter search over a spec's ranges (random or TPE, coarse to fine)")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--trials", type=_count(0), required=True,
                   help="finished trials per stage, counting those already in --out's study (the same command "
                        "after Ctrl-C runs what is left); 0 only reports the study (table, best spec, plot)")
    p.add_argument("--epochs", type=_count(1),
                   help="epochs per fine trial, and per coarse trial when coarse runs alone without --coarse-epochs "
                        "(default: the spec's)")
    p.add_argument("--coarse-epochs", type=_count(1),
                   help="epochs per coarse trial (default: a third of --epochs before a fine stage, else --epochs)")
    p.add_argument("--stages", default="coarse,fine", help="coarse,fine (default), or one of them")
    p.add_argument("--sampler", choices=("random", "tpe"), default="random")
    p.add_argument("--out", metavar="DIR", help="study directory (default: runs/search_<spec name>)")
    p.add_argument("--jobs", type=_count(1), default=1, help="trials in parallel processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-trial lines")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ensemble", help="evaluate (and export) the average of models' predicted probabilities")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("-o", "--output", metavar="FILE.onnx", help="export the ensemble as one ONNX graph")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ensemble)
