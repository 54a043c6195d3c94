"""`nnc search`: random (or TPE) hyperparameter search over a spec's ranges, as the notes say.

Search in log space where the range says so, prefer random search to grid search, stage it
from coarse (few epochs, the spec's ranges) to fine (longer, ranges narrowed around the top
coarse trials), stop trials that explode (the 3x rule, in `train`) or fall clearly behind
(optuna's MedianPruner on the per-epoch validation metric), and warn when the best value lies
on the border of its range. The study lives in `DIR/study.db`: re-running continues it.
One search at a time holds `DIR/.lock`; an interrupted search still writes what its finished
trials give (table, best spec, plot).

Each trial is a real `train()` run in `DIR/trial_NNN/` on the spec text with each range call
replaced by the sampled value; the best trial's text is written as `DIR/best.nnspec`.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nnc.compiler.checks import check
from nnc.compiler.load import load_text
from nnc.compiler.spec import Spec
from nnc.compiler.values import SearchRange, format_value, resolve_text
from nnc.diagnostics import EXIT_DIVERGED, NncError
from nnc.files import folder_lock, make_dir
from nnc.runtime.plots import search_scatter

STUDY = "nnc-search"
BORDER = 0.10  # warn when the best value lies within 10% of its range's width from a border
TOP = 0.25  # the fine stage narrows each range to the top quarter of the coarse trials


# ---------------------------------------------------------------- ranges and values


@dataclass(frozen=True)
class Param:
    """One searched value: its spec range and the bounds the current stage samples from."""

    range: SearchRange
    lo: Any = None
    hi: Any = None
    choices: tuple = ()

    @property
    def name(self) -> str:
        return self.range.path

    @classmethod
    def of(cls, r: SearchRange) -> "Param":
        if r.dist == "choice":
            return cls(r, choices=tuple(r.args))
        return cls(r, r.args[0], r.args[1])

    def describe(self) -> str:
        if self.range.dist == "choice":
            return f"choice({', '.join(format_value(c) for c in self.choices)})"
        return f"{self.range.dist}({format_value(self.lo)}, {format_value(self.hi)})"


def suggest(trial, p: Param) -> Any:
    """Sample one value: log-uniform for loguniform ranges (uniform in log10 space)."""
    d = p.range.dist
    if d == "loguniform":
        return trial.suggest_float(p.name, p.lo, p.hi, log=True)
    if d == "uniform":
        return trial.suggest_float(p.name, p.lo, p.hi)
    if d == "intuniform":
        return trial.suggest_int(p.name, p.lo, p.hi)
    return trial.suggest_categorical(p.name, list(p.choices))


def narrow(params: list[Param], top: list[dict]) -> list[Param]:
    """Fine-stage ranges: the span of the top trials' values, widened by a margin (a quarter
    of that span, at least 5% of the original range; in log space for log ranges), kept
    inside the spec's range. Choices stay as they are (optuna's categoricals are fixed per study)."""
    out = []
    for p in params:
        vals = [t[p.name] for t in top if p.name in t]
        r = p.range
        if not vals:
            out.append(p)
            continue
        if r.dist == "choice":  # optuna fixes a categorical's choices for the whole study
            out.append(p)
            continue
        f, g = (math.log10, lambda x: 10 ** x) if r.log else (float, float)
        lo0, hi0 = f(r.args[0]), f(r.args[1])
        a, b = f(min(vals)), f(max(vals))
        m = max(0.25 * (b - a), 0.05 * (hi0 - lo0))
        lo, hi = g(max(lo0, a - m)), g(min(hi0, b + m))
        if r.dist == "intuniform":
            lo, hi = math.floor(lo), math.ceil(hi)
            if lo == hi:
                hi = min(r.args[1], hi + 1) if hi < r.args[1] else hi
                lo = max(r.args[0], lo - 1) if lo == hi else lo
        out.append(Param(r, lo, hi))
    return out


def border_warnings(spec: Spec, best: dict) -> list[str]:
    """The notes: a best value on the border of its range means the range should grow."""
    out = []
    for r in spec.search:
        if r.dist == "choice" or r.path not in best:
            continue
        v = best[r.path]
        f = math.log10 if r.log else float
        lo, hi = f(r.args[0]), f(r.args[1])
        pos = (f(v) - lo) / (hi - lo)
        space = " in log space" if r.log else ""
        if pos <= BORDER or pos >= 1 - BORDER:
            side = "lower" if pos <= BORDER else "upper"
            out.append(f"best {r.path} = {format_value(v)} lies within {BORDER:.0%} of the {side} border of "
                       f"{r.dist}({format_value(r.args[0])}, {format_value(r.args[1])}){space} "
                       f"(line {r.span.line}): the optimum may lie outside; widen the range and search again")
    return out


# ---------------------------------------------------------------- one trial


class _Pruned(Exception):
    pass


class PruneOnEpoch:
    """A train() callback: reports the validation metric each epoch; stops pruned trials."""

    def __init__(self, trial, metric: str, last: int):
        self.trial, self.metric, self.last, self.best, self.epochs = trial, metric, last, None, 0

    def start(self, run):
        pass

    def before_step(self, run):
        pass

    def after_step(self, run):
        pass

    def end(self, run):
        pass

    def epoch_end(self, run, record: dict):
        v = record.get(self.metric)
        self.epochs = record["epoch"]
        if v is None:
            return None
        maximize = "accuracy" in self.metric
        if self.best is None or (v > self.best if maximize else v < self.best):
            self.best = v
        self.trial.report(self.best, record["epoch"])
        if record["epoch"] < self.last and self.trial.should_prune():  # never discard a finished run
            raise _Pruned(f"pruned after epoch {record['epoch']}: {self.metric} {self.best:.4f} below the median")
        return None


def metric_of(spec: Spec) -> str:
    from nnc.compiler.vocab.losses import LOSSES

    return "val_accuracy" if LOSSES[spec.loss.kind].classification else "val_loss"


@dataclass
class Config:
    spec_path: str
    out: str
    trials: int  # per stage; 0 reports the study as it is
    epochs: int | None = None  # the fine stage's, and the coarse stage's when it runs alone (default: the spec's)
    coarse_epochs: int | None = None  # default: a third of `epochs` before a fine stage, else `epochs`
    stages: tuple[str, ...] = ("coarse", "fine")
    sampler: str = "random"
    seed: int = 0
    jobs: int = 1
    device: str = "cpu"


def stage_epochs(cfg: Config, spec: Spec) -> dict[str, int]:
    """Epochs per trial of each stage, as the options' help says."""
    fine = cfg.epochs or spec.train.epochs
    coarse = cfg.coarse_epochs or (max(1, fine // 3) if "fine" in cfg.stages else fine)
    return {"coarse": coarse, "fine": fine}


def _objective(cfg: Config, spec: Spec, params: list[Param], stage: str, epochs: int):
    import optuna

    from nnc.runtime.train import train

    metric = metric_of(spec)

    def objective(trial: optuna.Trial) -> float:
        cb = PruneOnEpoch(trial, metric, epochs)
        try:
            return run(trial, cb)
        except KeyboardInterrupt:  # optuna stores it FAIL and re-raises; say why
            trial.set_user_attr("reason", "interrupted")
            trial.set_user_attr("epochs_run", cb.epochs)
            raise

    def run(trial: optuna.Trial, cb: PruneOnEpoch) -> float:
        values = {p.range: suggest(trial, p) for p in params}
        run_dir = Path(cfg.out) / f"trial_{trial.number:03d}"
        trial.set_user_attr("stage", stage)
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("dir", str(run_dir))
        graph = check(load_text(resolve_text(spec.text, values), spec.document.name, (f"train.epochs={epochs}",)))
        try:
            train(graph, run_dir, device=cfg.device, quiet=True, callbacks=[cb])
        except NncError as e:
            if e.exit_code != EXIT_DIVERGED:
                raise
            # An exploded trial is stored PRUNED, not FAIL: TPE ignores failed trials, so it would
            # keep sampling the region that explodes. TPE ranks every pruned trial below every
            # completed one (and, among pruned ones, one with no reported epoch last), so it
            # learns to avoid that region; the median pruner compares completed trials only, and
            # a PRUNED trial never becomes the best. A fake worst value (COMPLETE with accuracy 0)
            # would do the same for TPE but count as a finished run for the pruner's start-up.
            reason = e.diagnostics[0].message.split(". ")[0]
            trial.set_user_attr("exploded", True)
            trial.set_user_attr("reason", reason)
            trial.set_user_attr("epochs_run", cb.epochs)
            raise optuna.TrialPruned(reason) from None
        except _Pruned as e:
            trial.set_user_attr("reason", str(e))
            trial.set_user_attr("epochs_run", cb.epochs)
            raise optuna.TrialPruned(str(e)) from None
        trial.set_user_attr("epochs_run", cb.epochs)
        if cb.best is None:  # search() refuses val 0 up front; a split too small to hold an example
            raise NncError(f"trial {trial.number} reported no {metric}: the validation split is empty "
                           "(data ... val 0.1)")
        return cb.best

    return objective


# ---------------------------------------------------------------- the study


def _study(cfg: Config, spec: Spec):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # not a traceback per exploded trial
    db = Path(cfg.out) / "study.db"
    if db.exists() and not db.is_file():
        raise NncError(f"{db}: a folder, not a study database; give another --out, or move it away")
    storage = f"sqlite:///{db.resolve()}"
    direction = "maximize" if metric_of(spec) == "val_accuracy" else "minimize"
    try:
        return optuna.create_study(study_name=STUDY, storage=storage, load_if_exists=True, direction=direction,
                                   pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0))
    except Exception as e:  # sqlalchemy's DatabaseError ("file is not a database"), optuna's schema errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise NncError(f"{db}: not a study database nnc search can open ({first}); give another --out, "
                       "or move it away") from None


def _sampler(cfg: Config, offset: int):
    import optuna

    seed = cfg.seed + offset  # a continued study must not replay the first run's draws
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, cfg.trials // 2)))
    return optuna.samplers.RandomSampler(seed=seed)


def _fail_stale(study) -> None:
    """Trials left RUNNING (the process died, or was interrupted outside the objective) will
    never finish: mark them failed. Only called while holding the run lock."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "reason", "interrupted")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _needs_validation(spec: Spec) -> None:
    if spec.data.val == 0:
        raise NncError.at(spec.spans.get("data.val") or spec.spans.get("data"),
                          f"nnc search ranks trials by {metric_of(spec)} on the validation split, and this spec "
                          "has none (val 0)", help="give the data a validation split, e.g. data ..., val 0.1"
                          ).with_document(spec.document)


@dataclass
class SearchResult:
    spec: Spec
    metric: str
    trials: list[dict]  # sorted best first: number, stage, state, value, params, reason, epochs_run
    # (stage, epochs, ranges, trials the study already held for it, a note on the ranges)
    stages: list[tuple[str, int, list[Param], int, str]] = field(default_factory=list)
    best: dict | None = None
    best_spec: Path | None = None
    plot: Path | None = None
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C: what the finished trials give was still written


def search(cfg: Config, on_trial: Callable[[dict], None] | None = None) -> SearchResult:
    """Bring each stage of the study in cfg.out (new or continued) to cfg.trials finished
    trials; when it holds them already (cfg.trials == 0, say) only report it. A KeyboardInterrupt ends the search early: the trial it
    stopped is marked failed ("interrupted"), and the result of the finished trials is still
    written and returned, with `interrupted` set."""
    from nnc.compiler.load import load_spec

    spec = load_spec(cfg.spec_path)
    if not spec.search:
        raise NncError.at(None, f"{cfg.spec_path}: no search ranges to search over",
                          help="write a range for a value, e.g. optimizer adam(lr=loguniform(1e-4, 1e-1))")
    check(spec)  # as `nnc check` does: a range that reaches a refused value stops here, not at its draw
    _needs_validation(spec)
    out = Path(cfg.out)
    if cfg.trials == 0 and not (out / "study.db").is_file():
        raise NncError(f"{out} holds no study to report; give --trials N to start one")
    make_dir(out, "search directory")
    # a second search on the same study would mark the first one's running trial failed
    with folder_lock(out, "nnc search", "give another --out"):
        study = _study(cfg, spec)
        known = study.user_attrs.get("spec_text")
        if known is None:
            study.set_user_attr("spec_text", spec.text)
        elif known != spec.text:
            raise NncError(f"{out / 'study.db'} holds a search of a different spec text; "
                           "give another --out to start a new study")
        _fail_stale(study)
        result = SearchResult(spec, metric_of(spec), [])
        try:
            if cfg.trials:
                _run_stages(cfg, spec, study, result, on_trial)
        except KeyboardInterrupt:
            result.interrupted = True
            _fail_stale(study)
        _finish(study, result, out)
    return result


def _run_stages(cfg: Config, spec: Spec, study, result: SearchResult, on_trial) -> None:
    import optuna

    epochs_of = stage_epochs(cfg, spec)
    params = [Param.of(r) for r in spec.search]
    for stage in cfg.stages:
        epochs = epochs_of[stage]
        note = ""
        if stage == "fine":
            done = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                    if t.user_attrs.get("stage") != "fine"]
            if len(done) >= 2:
                done.sort(key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
                params = narrow(params, [t.params for t in done[:max(2, math.ceil(TOP * len(done)))]])
            else:
                note = f"the spec's ranges: {len(done)} completed coarse trial(s), 2 needed to narrow them"
        # --trials counts the stage's finished trials, those of earlier runs of the command too: the
        # same command after an interrupt runs what is left (failed, i.e. interrupted, trials are redone)
        done = sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                        optuna.trial.TrialState.PRUNED))
                   if t.user_attrs.get("stage") == stage)
        todo = max(0, cfg.trials - done)
        result.stages.append((stage, epochs, params, done, note))
        if not todo:
            continue
        offset = len(study.trials)
        if cfg.jobs > 1:
            _parallel(cfg, study, params, stage, epochs, offset, todo, on_trial)
        else:
            study.sampler = _sampler(cfg, offset)
            callbacks = [lambda s, t: on_trial(_row(t))] if on_trial else []
            study.optimize(_objective(cfg, spec, params, stage, epochs), n_trials=todo, callbacks=callbacks)


# ---------------------------------------------------------------- --jobs J


def _worker(cfg: Config, params: list[Param], stage: str, epochs: int, n: int, offset: int, errors) -> None:
    """One process of a --jobs J stage: its share of the trials, on the shared study. A user
    error goes back to the parent through `errors`; Ctrl-C ends it quietly (exit 130) after
    the objective has marked its trial interrupted."""
    import torch

    from nnc.compiler.load import load_spec

    try:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(cfg.jobs, 1)))
        spec = load_spec(cfg.spec_path)
        study = _study(cfg, spec)
        study.sampler = _sampler(cfg, offset)
        study.optimize(_objective(cfg, spec, params, stage, epochs), n_trials=n)
    except KeyboardInterrupt:
        sys.exit(130)
    except NncError as e:
        errors.put((e.diagnostics, e.exit_code))
        sys.exit(1)


def _parallel(cfg: Config, study, params: list[Param], stage: str, epochs: int, offset: int, trials: int,
              on_trial) -> None:
    """--jobs J: J processes share the SQLite study (train's plots use pyplot, which is not
    thread-safe, so processes rather than optuna's threads). The parent polls the study and
    reports each trial as it finishes."""
    import multiprocessing as mp
    import queue
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    shares = [trials // cfg.jobs + (k < trials % cfg.jobs) for k in range(cfg.jobs)]
    procs = [ctx.Process(target=_worker, args=(cfg, params, stage, epochs, n, offset + 1000 * k, errors), daemon=True)
             for k, n in enumerate(shares) if n]
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            wait([p.sentinel for p in procs], timeout=0.5)
            _report_new(study, seen, on_trial)
    except KeyboardInterrupt:
        _stop(procs)
        _report_new(study, seen, on_trial)  # the trials that finished meanwhile still get their line
        raise
    _report_new(study, seen, on_trial)
    codes = [p.exitcode for p in procs]
    if any(codes):
        try:
            diagnostics, code = errors.get(timeout=5)
        except queue.Empty:
            if 130 in codes:  # a worker was interrupted on its own (kill -INT)
                raise KeyboardInterrupt from None
            raise RuntimeError(f"a search worker died (exit codes {codes})") from None
        raise NncError(diagnostics, code)


def _report_new(study, seen: set, on_trial) -> None:
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state.is_finished() and t.number not in seen:
            seen.add(t.number)
            if on_trial:
                on_trial(_row(t))


def _stop(procs) -> None:
    """Ctrl-C reaches the workers too (one process group); give them time to mark their trials
    interrupted, then interrupt (and at last terminate) any still running."""
    import signal

    for p in procs:
        p.join(5)
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGINT)
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.terminate()
            p.join()


# ---------------------------------------------------------------- the result


def _row(t) -> dict:
    exploded = t.user_attrs.get("exploded") or (t.state.name == "FAIL" and  # studies from before exploded = PRUNED
                                                t.user_attrs.get("reason", "").startswith("training diverged"))
    return {"number": t.number, "stage": t.user_attrs.get("stage", ""),
            "state": "exploded" if exploded else t.state.name.lower(),
            "value": t.value if t.state.name == "COMPLETE" else None, "params": dict(t.params),
            "reason": t.user_attrs.get("reason", ""), "epochs_run": t.user_attrs.get("epochs_run"),
            "epochs": t.user_attrs.get("epochs"),
            "last": max(t.intermediate_values.items())[1] if t.intermediate_values else None}


def _finish(study, result: SearchResult, out: Path) -> None:
    import optuna

    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    sign = -1 if maximize else 1
    rows.sort(key=lambda r: (r["value"] is None, sign * (r["value"] if r["value"] is not None else 0), r["number"]))
    result.trials = rows
    complete = [r for r in rows if r["value"] is not None]
    if not complete:
        return
    best = complete[0]
    result.best = best
    values = {r: best["params"][r.path] for r in result.spec.search}
    result.best_spec = out / "best.nnspec"
    result.best_spec.write_text(best_header(result.spec, result.metric, best) + resolve_text(result.spec.text, values))
    result.warnings = border_warnings(result.spec, best["params"])
    result.plot = search_scatter(result.trials, result.spec.search, result.metric, out / "search.png")


def best_header(spec: Spec, metric: str, best: dict) -> str:
    """The comment lines on top of best.nnspec: where it came from, and that its `train epochs`
    is the spec's (for the full run), not the trial's."""
    ran = best["epochs_run"]
    text = (f"# resolved by nnc search from {spec.document.name}: trial {best['number']} ({best['stage']} stage), "
            f"{metric} {best['value']:.4f} after {ran} epoch(s)\n")
    if ran < spec.train.epochs:
        text += (f"# (the trial trained {ran} epoch(s); `train epochs` below is the spec's {spec.train.epochs}, "
                 "for the full run)\n")
    elif ran > spec.train.epochs:
        text += (f"# (the trial trained {ran} epoch(s); `train epochs` below is the spec's {spec.train.epochs}: "
                 f"nnc train --epochs {ran} reproduces the trial)\n")
    return text
