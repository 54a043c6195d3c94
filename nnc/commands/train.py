"""`nnc train SPEC` (a babysat run into a run directory) and `nnc train --resume DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nnc.commands.options import add_allow_read, add_device, add_set, count, print_warnings, usage
from nnc.diagnostics import NncError


def run(args) -> int:
    from nnc.compiler.checks import check
    from nnc.compiler.load import load_spec
    from nnc.runtime.checkpoint import load
    from nnc.runtime.distributed import from_env

    world = from_env()
    if args.nproc > 1 and world.size > 1:
        raise usage(f"--nproc {args.nproc}: this process is one of {world.size} started by torchrun already; "
                    "give the number of processes to torchrun (--nproc-per-node) only")
    if world.rank > 0:  # the other ranks of a run say nothing: rank 0 speaks for the run
        args.quiet, args.json = True, False

    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.resume:
        from nnc.compiler.load import load_text
        from nnc.runtime.reads import check_reads

        if args.spec or args.set or args.seed is not None:
            raise usage("--resume continues a run as it was: give no SPEC, --set or --seed (--epochs N extends it)")
        if Path(args.resume).is_file():  # `--resume run/last.safetensors` names the run too
            if Path(args.resume).name != "last.safetensors":
                raise usage(f"--resume takes a run directory (it continues from its last.safetensors, which holds "
                            f"the optimizer state); got the file {args.resume}")
            args.resume = str(Path(args.resume).parent)
        if not (Path(args.resume) / "last.safetensors").exists() and Path(args.resume).is_dir():
            raise NncError(f"{args.resume} holds no checkpoint: its run stopped before the first one, so there is "
                           f"nothing to resume; train again into it: nnc train SPEC --out {args.resume}")
        ck = load(Path(args.resume) / "last.safetensors")
        done = ck.info.get("epoch", 0)
        if args.epochs is not None and args.epochs <= done:
            raise usage(f"{args.resume} is at epoch {done} already; --epochs {args.epochs} would not extend it "
                        f"(give more than {done})")
        extend = (f"train.epochs={args.epochs}",) if args.epochs is not None else ()
        kept = tuple(o for o in ck.overrides if not (extend and o.split("=", 1)[0].strip() == "train.epochs"))
        spec = load_text(ck.spec_text, ck.spec_name, kept + extend, ck.spec_files)
        _say_if_finished(args, spec, ck, done)
        check_reads(ck, spec, tuple(args.allow_read))
        out = args.out or args.resume
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve() and world.rank == 0:
            _check_fresh(out)
        if extend and not args.quiet and args.nproc == 1:
            print(f"continuing {args.resume} to {args.epochs} epochs (it was at epoch {done}); "
                  "a schedule over the run's length (cosine, linear warm-up in steps) follows the new length",
                  file=sys.stderr)
    else:
        if not args.spec:
            raise usage("give a SPEC, or --resume RUN_DIR")
        spec = load_spec(args.spec, tuple(overrides))
        if args.out and world.rank == 0:  # (the other ranks would find rank 0's files there)
            _check_fresh(args.out)
        out = args.out or _default_out(args.spec, args.quiet)
    graph = check(spec)
    if not args.quiet and args.nproc == 1:  # (with --nproc, rank 0 prints them)
        print_warnings(graph)
    if args.nproc > 1:
        return _launch(args, out)
    from nnc.runtime.train import train

    try:
        final = train(graph, out, device=args.device, resume=args.resume, quiet=args.quiet or args.json, plots=args.plots)
    except KeyboardInterrupt:
        if world.rank > 0:
            return 130
        if (Path(out) / "last.safetensors").is_file():
            print(f"nnc: interrupted; the last checkpoint is {out}/last.safetensors: continue with "
                  f"nnc train --resume {out}", file=sys.stderr)
        else:
            print("nnc: interrupted before the first checkpoint; nothing to resume", file=sys.stderr)
        return 130
    except NncError as e:  # a script reading --json gets its one line on failure too (divergence: exit 3)
        if world.rank > 0:  # every rank met the same error; rank 0 reports it
            return e.exit_code
        if args.json:
            print(json.dumps({"error": str(e), "exit": e.exit_code}))
        raise
    if world.rank > 0:
        return 0
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
        later = " (drawing in the background)" if args.plots == "background" else ""
        for p in final["plots"]:
            print(f"plot: {p}{later}")
    return 0


def _say_if_finished(args, spec, ck, done: int) -> None:
    """A finished run has nothing to resume: say so (train() then only reports its final metrics);
    one that stopped early would stop again at once, so more --epochs are refused."""
    from nnc.runtime.train import stopped_early

    cfg = spec.train
    if stopped_early(ck.state_meta.get("book", {}), cfg):
        why = (f"it stopped early at epoch {done}: {cfg.early_stop.metric} had not improved for "
               f"{cfg.early_stop.patience} epochs")
        if args.epochs is not None:
            raise usage(f"{args.resume} is finished ({why}); more epochs would stop again at once. Train it "
                        "anew with a larger patience (--set train.early_stop=\"(patience=N)\")")
    elif done >= cfg.epochs:
        why = f"it ran its {done} epochs; --epochs N extends it"
    else:
        return
    if not args.quiet:
        print(f"{args.resume} is finished ({why}); nothing to resume: its final metrics follow", file=sys.stderr)


def _launch(args, out: str) -> int:
    """`--nproc N`: the same command as N processes under torchrun, into the run directory chosen
    here (every rank must name the same one)."""
    from nnc.runtime.distributed import launch

    argv = [args.spec] if args.spec and not args.resume else []
    argv += ["--out", str(out), "--device", args.device, "--plots", args.plots]
    if args.resume:
        argv += ["--resume", args.resume]
    for flag, value in (("--epochs", args.epochs), ("--seed", args.seed)):
        if value is not None:
            argv += [flag, str(value)]
    for o in args.set:
        argv += ["--set", o]
    for a in args.allow_read:
        argv += ["--allow-read", a]
    argv += [f for f, on in (("--json", args.json), ("--quiet", args.quiet)) if on]
    return launch(args.nproc, argv)


def _check_fresh(out: str) -> None:
    """A run never lands on top of another: their metrics, plots and TensorBoard events would mix.
    (The run checks again once it holds the directory's lock: runtime/run_dir.claim.)"""
    from nnc.runtime.run_dir import fresh_error, holds_run

    if Path(out).exists() and not Path(out).is_dir():
        raise usage(f"--out {out}: a file, not a folder")
    if holds_run(Path(out)):
        raise fresh_error(Path(out))


def _default_out(spec_path: str, quiet: bool) -> str:
    """runs/<spec name>, or runs/<spec name>-2, -3 ... when earlier runs are there (or a run that
    has not reached its first checkpoint holds the folder)."""
    from nnc.files import lock_holder
    from nnc.runtime.run_dir import holds_run

    base = Path("runs") / Path(spec_path).stem
    out, n = base, 1
    while holds_run(out) or (out.exists() and not out.is_dir()) or (out.is_dir() and lock_holder(out)):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    if n > 1 and not quiet:
        print(f"run directory: {out} ({base} holds an earlier run)", file=sys.stderr)
    return str(out)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a spec's model on its data (a babysat run)")
    p.add_argument("spec", nargs="?", metavar="SPEC")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<spec name>)")
    p.add_argument("--epochs", type=count(1), help="override train.epochs (with --resume: extend the run)")
    add_device(p)
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    add_allow_read(p)
    p.add_argument("--nproc", type=count(1), default=1, metavar="N",
                   help="train with N processes on this machine (torchrun; one per GPU); SPEC's batch is the global "
                        "batch (docs/scale.md)")
    add_set(p)
    p.add_argument("--json", action="store_true", help="end with one JSON line of the final metrics")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--plots", choices=("background", "wait", "off"), default="background",
                   help="the end-of-run pictures: drawn by a background process while nnc exits (default), "
                        "before it exits, or not (`nnc plot RUN_DIR` draws them later)")
    p.set_defaults(func=run)
