"""`nnc search SPEC`: random or TPE search over a spec's ranges, coarse to fine (docs/search.md)."""

from __future__ import annotations

import json
import sys

from nnc.commands.options import add_device, count, usage


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


INTERRUPTED = "interrupted; re-run the same command to continue"


def run(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from nnc.runtime.search import Config, search

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if stages not in (("coarse",), ("fine",), ("coarse", "fine")):  # fine narrows what coarse found: never first
        raise usage(f"--stages takes coarse, fine or coarse,fine; got {args.stages!r}")
    if args.coarse_epochs is not None and "coarse" not in stages:
        raise usage("--coarse-epochs sets the coarse stage's epochs, and --stages fine runs none")
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


def register(sub) -> None:
    p = sub.add_parser("search", help="hyperparameter search over a spec's ranges (random or TPE, coarse to fine)")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--trials", type=count(0), required=True,
                   help="finished trials per stage, counting those already in --out's study (the same command "
                        "after Ctrl-C runs what is left); 0 only reports the study (table, best spec, plot)")
    p.add_argument("--epochs", type=count(1),
                   help="epochs per fine trial, and per coarse trial when coarse runs alone without --coarse-epochs "
                        "(default: the spec's)")
    p.add_argument("--coarse-epochs", type=count(1),
                   help="epochs per coarse trial (default: a third of --epochs before a fine stage, else --epochs)")
    p.add_argument("--stages", default="coarse,fine", help="coarse,fine (default), or one of them")
    p.add_argument("--sampler", choices=("random", "tpe"), default="random")
    p.add_argument("--out", metavar="DIR", help="study directory (default: runs/search_<spec name>)")
    p.add_argument("--jobs", type=count(1), default=1, help="trials in parallel processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    add_device(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-trial lines")
    p.set_defaults(func=run)
