"""`nnc train`: a babysat training run, read top to bottom.

Small data lives in memory as tensors on the device and is batched by indexing, never by a
per-sample DataLoader; data larger than memory is streamed from disk by worker processes
(runtime/feeds.py chooses, as the spec's data plan says). Every epoch ends with a validation
pass, one line of metrics, the `last` checkpoint (with optimizer and RNG state, for --resume)
and, when it improved, the `best` one. The run always ends holding its best weights.

Under torchrun (`nnc train --nproc N`, or several machines) every process trains on its share
of each global batch with DistributedDataParallel; the spec's `batch` is the global batch.
Rank 0 alone writes files and runs the monitors; every decision to stop is taken on values all
ranks share (runtime/distributed.py), so they stop together.

`prepare` builds everything the loop needs (`Setup`); `RunState` is what the loop changes and
--resume restores; `train` is the loop. The pieces it calls are the functions below it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nnc.compiler.graph import Graph
from nnc.compiler.modules import first
from nnc.compiler.torch_module import build_model
from nnc.compiler.vocab.losses import LOSSES, build_loss, chance_loss
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.schedules import Plateau, lr_at
from nnc.diagnostics import Diagnostic, NncError
from nnc.runtime import checkpoint, distributed, state, weights
from nnc.runtime import param_groups as P
from nnc.runtime.data import check_bad, data_error
from nnc.runtime.device import Precision, pick_device, precision_for, refuse_if_too_big, wants_channels_last
from nnc.runtime.distributed import World, all_sum
from nnc.runtime.divergence import diverged, exploded
from nnc.runtime.evaluate import hits
from nnc.runtime.feeds import Data, open_data
from nnc.runtime.run_dir import MetricsLog, claim, continue_outputs, write_spec_copy

ACCURACY_BLOCK = 32  # steps whose predictions are compared at once (an op per step costs small models ~2.5%)


@dataclass
class Run:
    """What callbacks (monitors) may read: the live objects of a run."""

    graph: Graph
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    out: Path
    device: torch.device
    log: MetricsLog
    epoch: int = 0
    step: int = 0
    loss: float = math.nan
    extra: dict = field(default_factory=dict)


@dataclass
class RunState:
    """What the loop changes, saved in every `last` checkpoint and restored by --resume."""

    epoch: int = 0  # epochs done
    step: int = 0  # optimizer steps done
    best: float | None = None  # the watched metric's best value, and its epoch
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the best one
    start_loss: float | None = None  # the first step's loss: the divergence rule's reference
    plateau: dict = field(default_factory=lambda: {"scale": 1.0, "best": None, "bad": 0})
    lr: float = math.nan  # the rate of the last step (not saved)

    def saved(self) -> dict:
        d = asdict(self)
        d.pop("lr")
        return d


@dataclass
class Setup:
    """Everything the loop works with, built once by `prepare`."""

    graph: Graph
    out: Path
    dev: torch.device
    world: World
    precision: Precision
    data: Data  # the splits as feeds of device batches, the preprocessing statistics, the classes
    model: torch.nn.Module  # the spec's module: what is saved, evaluated and monitored
    net: torch.nn.Module  # what the training forward pass calls: the model, in DDP / torch.compile
    optimizer: torch.optim.Optimizer
    loss_fn: object
    n_classes: int | None  # None: a regression loss
    batch: int  # the global batch
    steps_per_epoch: int
    total_steps: int
    shuffle: torch.Generator
    aug_gen: torch.Generator | None
    ema: list[torch.Tensor] | None  # the averaged weights and normalization statistics (`averaged`), in order
    penalized: list  # (for the L1 / in-loss L2 penalty)
    max_norm: list
    watch: str  # the metric that picks `best`
    chance: float  # the loss of uniform scores: the divergence rule's floor
    spec_path: str  # the spec by its absolute path: its relative data paths resolve from anywhere
    stop: distributed.StopSignal | None = None
    unreadable: dict = field(default_factory=dict)  # split -> unreadable examples met in its last pass
    t_start: float = 0.0  # when the loop started

    @property
    def spec(self):
        return self.graph.spec

    @property
    def stats(self) -> dict:
        return self.data.stats

    def forward(self):
        dtype = self.precision.autocast
        return torch.autocast(self.dev.type, dtype) if dtype is not None else contextlib.nullcontext()


# ---------------------------------------------------------------- the loop


def train(graph: Graph, out: str | Path, device: str = "auto", resume: str | None = None,
          quiet: bool = False, callbacks: list | None = None, data=None, plots: str = "wait") -> dict:
    """Train the graph's model; return the final metrics. Raises NncError (exit 1) on bad
    input and NncError(exit 3) when the loss explodes. A process started by torchrun joins its
    process group; `callbacks` run on the process they are given to (the default monitors: rank 0).
    `data`: arrays (runtime.data's Arrays) handed over in memory by the Python API, in place of
    the spec's data source. The run holds its directory's lock from start to end (rank 0:
    runtime/run_dir.claim). `plots`: the end-of-run pictures drawn before returning ("wait"), in
    the background, or "off"."""
    world = distributed.from_env()
    cfg = graph.spec.train
    out = Path(out)
    dev = pick_device(cfg.device, "the spec's train device") if device == "auto" else pick_device(device)
    dev = distributed.device_for(world, dev)
    continuing = resume is not None and Path(resume).resolve() == out.resolve()
    with distributed.joined(world, dev), claim(out, continuing) if world.main else contextlib.nullcontext():
        return _train(graph, out, dev, world, resume, quiet or not world.main, callbacks, data, plots)


def _train(graph: Graph, out: Path, dev: torch.device, world: World, resume: str | None, quiet: bool,
           callbacks: list | None, given=None, plots: str = "wait") -> dict:
    from nnc.runtime.progress import EpochProgress

    spec, cfg = graph.spec, graph.spec.train
    s, st = prepare(graph, out, dev, world, resume, given)
    if callbacks is None:  # the babysitting monitors are on by default; callbacks=[] turns them off
        from nnc.runtime.monitors import default_monitors

        callbacks = default_monitors(graph) if world.main else []
    plateau = Plateau(spec.schedule.main.params, spec.optimizer.params.lr, st.plateau) \
        if spec.schedule.main.kind == "on_plateau" else None
    log = MetricsLog(out, resume=bool(resume)) if world.main else NoLog()
    if world.main:
        write_spec_copy(out, spec.text, spec.overrides)
    run = Run(graph, s.model, s.optimizer, out, s.dev, log)
    for cb in callbacks:
        cb.start(run)
    progress = EpochProgress(quiet)
    progress.note(start_line(s))
    account_unreadable(s, "load", s.data.bad, log, progress)
    if not resume:  # so that a run that diverges at once still leaves a good checkpoint
        save(s, st, "last", {"epoch": 0, "step": 0, "metrics": {}})
    full_batch = OPTIMIZERS[spec.optimizer.kind].full_batch
    sample_every = cfg.monitor_every if callbacks else 0
    s.t_start = time.perf_counter()
    s.model.train()
    try:
        for epoch in range(st.epoch, st.epoch if stopped_early(st.saved(), cfg) else cfg.epochs):
            run.epoch = epoch
            meter = EpochMeter(s.n_classes, s.dev, labels=LOSSES[spec.loss.kind].predicts == "labels")
            bar = progress.start(epoch, cfg.epochs, s.steps_per_epoch)
            xb = yb = None
            for i, (xb, yb, n_global) in enumerate(batches(s, epoch)):
                # --- set the rate (epoch-unit schedules change it at epoch boundaries only)
                if i == 0 or lr_changes_per_step(spec):
                    st.lr = lr_for(st.step, s, st)
                    set_lr(s.optimizer, st.lr)
                sampled = bool(sample_every) and st.step % sample_every == 0
                # --- forward, backward, update; the loss of the whole global batch
                loss, scores = step(s, xb, yb, n_global, full_batch, callbacks if sampled else (), run)
                loss_v, n_seen = sync_step(s, loss, len(yb))
                if st.start_loss is None:
                    st.start_loss = loss_v
                if exploded(loss_v, st.start_loss, s.chance) and (st.step > 0 or not math.isfinite(loss_v)):
                    raise _diverged(s, st, loss_v, f"epoch {epoch + 1}, step {st.step + 1}")
                run.step, run.loss = st.step, loss_v
                if sampled:
                    for cb in callbacks:
                        cb.after_step(run)
                meter.add(loss_v, n_seen, scores, yb)
                st.step += 1
                progress.advance(bar, loss_v, meter.seen, meter.elapsed(), st.lr)
            if end_epoch(s, st, run, epoch, meter, (xb, yb), callbacks, log, progress, plateau):
                break
    except BaseException:  # diverged or interrupted: keep the pictures and logs of what ran
        progress.close()
        if world.main:
            wrap_up(callbacks, run, log, out, plots)
        raise
    finally:
        progress.close()
        if s.stop is not None:
            s.stop.close()
    return finish(s, st, run, callbacks, log, progress, plots)


def end_epoch(s: Setup, st: RunState, run: Run, epoch: int, meter: EpochMeter, last: tuple, callbacks: list,
              log, progress, plateau) -> bool:
    """Judge the epoch's last update, validate, log, checkpoint; True: stop early."""
    cfg = s.spec.train
    account_unreadable(s, "train", s.data.train.problems()[0], log, progress)
    # --- the last update judged on its batch, then the validation split
    train_time = meter.elapsed()
    xb, yb = last
    with torch.no_grad(), s.forward():
        after = s.loss_fn(s.model(xb).float(), yb) if xb is not None else torch.tensor(math.nan)
    after = global_mean(s, after, len(yb) if yb is not None else 0)
    if exploded(after, st.start_loss, s.chance):
        raise _diverged(s, st, after, f"the end of epoch {epoch + 1}")
    ema_statistics(s)
    with ema_weights(s):
        val = score(s, s.data.val) if s.data.val.n else None
    account_unreadable(s, "val", s.data.val.problems()[0], log, progress)
    if val and not math.isfinite(val[0]):
        raise _diverged(s, st, val[0], f"validation after epoch {epoch + 1}")
    rec = {"epoch": epoch + 1, "step": st.step, "lr": st.lr, **meter.result(s.world),
           "val_loss": val[0] if val else None, "val_accuracy": val[1] if val else None,
           "samples_per_s": meter.seen / train_time, "time": time.perf_counter() - s.t_start}
    for cb in callbacks:
        rec.update(cb.epoch_end(run, rec) or {})
    log.write(rec, tb_step=epoch + 1)
    progress.epoch_line(rec)

    # --- checkpoint: `best` when the watched metric improved, `last` always
    st.epoch = epoch + 1
    info = {"epoch": epoch + 1, "step": st.step, "metrics": rec}
    if improved(rec[s.watch], st.best, s.watch, cfg.early_stop.min_delta if cfg.early_stop else 0.0):
        st.best, st.best_epoch, st.bad_epochs = rec[s.watch], epoch + 1, 0
        save(s, st, "best", info)
    else:
        st.bad_epochs += 1
    if plateau is not None:
        plateau.update(rec.get(plateau.p.metric))
    save(s, st, "last", info)

    # --- stop early when the watched metric has not improved for `patience` epochs
    if cfg.early_stop and st.bad_epochs >= cfg.early_stop.patience:
        progress.note(f"early stop: {s.watch} has not improved for {cfg.early_stop.patience} epochs "
                      f"(best {st.best:.4f} at epoch {st.best_epoch})")
        return True
    return False


class NoLog:
    """The run's log on ranks other than 0: they write nothing."""

    path = None

    def write(self, record: dict, tb_step: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def start_line(s: Setup) -> str:
    """What the run is about to do: where, how many processes, the batch per process, the data path."""
    w, p = s.world, s.data.plan
    procs = f"{w.size} processes ({'NCCL' if s.dev.type == 'cuda' else 'gloo'}), batch {s.batch} = " \
            f"{w.size} x {s.batch // w.size}{'+' if s.batch % w.size else ''} per process" if w.size > 1 \
        else f"batch {s.batch}"
    how = "in memory" if p.cache == "memory" else "streamed"
    return f"training on {s.dev.type} in {s.precision.name}, {procs}; data {how} ({p.why})"


# ---------------------------------------------------------------- preparation


def prepare(graph: Graph, out: Path, dev: torch.device, world: World, resume: str | None,
            given=None) -> tuple[Setup, RunState]:
    """Data (`given` arrays, or the spec's source), model, optimizer and the run's state, restored
    from `resume`'s last checkpoint."""
    spec, cfg = graph.spec, graph.spec.train
    if spec.search:
        r = spec.search[0]
        raise NncError(Diagnostic(f"this spec has {len(spec.search)} search range(s) ({', '.join(s.path for s in spec.search)}): "
                                  "nnc train needs one value for each", r.span, spec.document,
                                  "run `nnc search` on it, or fix a value with --set"))
    torch.manual_seed(cfg.seed)
    refuse_if_too_big(graph, dev, "train")  # before the data and the model are allocated
    opt_def = OPTIMIZERS[spec.optimizer.kind]
    _check_world(graph, world, dev, opt_def.full_batch)
    precision = precision_for(cfg.precision, dev, spec.spans.get("train.precision"))
    channels_last = wants_channels_last(cfg.channels_last, graph)
    ck = checkpoint.load(Path(resume) / "last.safetensors", with_state=True) if resume else None

    # --- data: splits as feeds, preprocessing fitted on the training split only (or the run's own)
    data = open_data(graph, world, dev, dict(ck.preprocess) if ck else None, channels_last,
                     max(1, cfg.batch // world.size), given)
    loss_def = LOSSES[spec.loss.kind]
    n_classes = graph.output.features if loss_def.classification else None

    # --- model and optimizer
    model = build_model(graph).to(dev)
    if channels_last:  # ~1.1-1.2x faster conv training in eager mode
        model = model.to(memory_format=torch.channels_last)
    if cfg.finetune and not resume:
        weights.finetune(model, graph)
    if cfg.sync_batchnorm and world.size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # the notes' L2 is the optimizer's weight_decay, except for AdamW (decoupled) and L-BFGS (which
    # takes one parameter group): there it is added to the loss
    coupled = spec.optimizer.kind != "adamw" and not opt_def.full_batch
    groups = P.param_groups(model, graph, coupled_l2=coupled)
    if opt_def.full_batch:
        groups = [{"params": [p for g in groups for p in g["params"]], "lr_mult": 1.0}]
    n_train = data.train.n
    batch = n_train if opt_def.full_batch else min(cfg.batch, n_train)
    steps_per_epoch = len(epoch_plan(torch.arange(n_train), batch, world))
    s = Setup(graph, out, dev, world, precision, data, model, _net(model, cfg, world, dev),
              opt_def.build(spec.optimizer.params, groups), build_loss(graph), n_classes,
              batch, steps_per_epoch, steps_per_epoch * cfg.epochs,
              torch.Generator(device="cpu").manual_seed(cfg.seed),
              torch.Generator(device=dev).manual_seed(cfg.seed + 1) if spec.data.augment else None,
              [t.detach().clone() for _, t in averaged(model)] if cfg.ema else None,
              P.decayed(model, graph), P.max_norm_targets(model, graph) if spec.regularize.max_norm else [],
              _watched_metric(graph, n_classes, data.val.n),
              chance_loss(graph, n_classes) if n_classes else 0.0,
              str(Path(spec.document.name).resolve()) if Path(spec.document.name).is_file() else spec.document.name,
              distributed.StopSignal(world) if world.size > 1 else None)
    st = RunState()
    if ck is not None:
        _restore(s, st, ck)
        if world.main:
            continue_outputs(Path(resume), out, st.epoch)
    if world.rank > 0:  # dropout masks of their own (the shared seed made the same initial weights)
        torch.manual_seed(cfg.seed + 7919 * world.rank + st.step)
    return s, st


def stopped_early(book: dict, cfg) -> bool:
    """The run's saved state (`RunState.saved()`) says early stopping ended it."""
    return bool(cfg.early_stop) and book.get("bad_epochs", 0) >= cfg.early_stop.patience


def _check_world(graph: Graph, world: World, dev: torch.device, full_batch: bool) -> None:
    """What several processes cannot do (refused alike on every rank, before any collective)."""
    spec = graph.spec
    if world.size == 1:
        return
    if full_batch:
        raise NncError.at(spec.spans.get("optimizer"), f"{spec.optimizer.kind} is full-batch: it trains in one process",
                          help="run it without --nproc / torchrun, or use sgd, adam or adamw")
    if spec.train.sync_batchnorm and dev.type != "cuda":
        raise NncError.at(spec.spans.get("train.sync_batchnorm"), "sync_batchnorm needs GPUs: torch's SyncBatchNorm "
                          "runs on CUDA only", help="remove it for a run on CPUs")


def _net(model: torch.nn.Module, cfg, world: World, dev: torch.device) -> torch.nn.Module:
    """What the training step calls: DistributedDataParallel over several processes (it averages
    the gradients in backward), torch.compile'd when asked."""
    net = model
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                      gradient_as_bucket_view=True)
    if cfg.compile:
        net = torch.compile(net)
    return net


def _watched_metric(graph: Graph, n_classes: int | None, n_val: int) -> str:
    """The metric that picks `best` (check made sure an early_stop metric exists for this spec)."""
    es = graph.spec.train.early_stop
    if es:
        return es.metric
    return ("val_accuracy" if n_classes else "val_loss") if n_val else "train_loss"


def _restore(s: Setup, st: RunState, ck: checkpoint.Checkpoint) -> None:
    """The weights, optimizer, RNG and run state of a `last` checkpoint."""
    s.model.load_state_dict(ck.model)
    if s.ema is not None:  # model/ holds the average; the raw weights the optimizer left are in state/raw/
        with torch.no_grad():
            for (name, p), e in zip(averaged(s.model), s.ema):
                e.copy_(p)
                if f"raw/{name}" in ck.state:  # (a checkpoint of an older nnc averaged no statistics)
                    p.copy_(ck.state[f"raw/{name}"])
    state.optimizer_from_tensors(s.optimizer, ck.state, ck.state_meta["optimizer"])
    state.rng_from_tensors(ck.state, s.shuffle)
    if s.precision.scaler is not None and "scaler" in ck.state_meta:
        s.precision.scaler.load_state_dict(ck.state_meta["scaler"])
    if s.aug_gen is not None and "rng/augment" in ck.state:
        s.aug_gen.set_state(ck.state["rng/augment"])
    for k, v in ck.state_meta["book"].items():
        setattr(st, k, v)


# ---------------------------------------------------------------- the pieces of a step


def epoch_plan(perm: torch.Tensor, batch: int, world: World) -> list[tuple[torch.Tensor, int, int]]:
    """An epoch's global batches (positions in the split) with this process's share [lo, hi) of
    each. Over several processes, a last batch smaller than their number is left out."""
    out = []
    for i in range(0, len(perm), batch):
        gb = perm[i:i + batch]
        if len(gb) >= world.size:
            out.append((gb, *world.shard(len(gb))))
    return out


def batches(s: Setup, epoch: int):
    """One epoch of (x, y, global batch size): a fresh permutation of the training split (the same
    on every process), each process's share of each batch, augmented and preprocessed."""
    perm = torch.randperm(s.data.train.n, generator=s.shuffle).to(s.data.train.index_device)
    plan = epoch_plan(perm, s.batch, s.world)
    for (gb, _, _), (xb, yb) in zip(plan, s.data.train.batches(epoch, plan, s.aug_gen)):
        yield xb, yb, len(gb)


def sync_step(s: Setup, loss: torch.Tensor, n: int) -> tuple[float, int]:
    """The global batch's loss and size. Over several processes one all-reduce also carries
    Ctrl-C and bad data from any rank to all, which then stop at this same step."""
    fatal = s.data.train.fatal if s.data.plan.cache == "stream" else None
    if s.world.size == 1:
        if fatal:
            raise data_error(s.graph, f"streamed data: {fatal}")
        return loss.item(), n
    t = torch.stack([loss.detach().double() * n, *torch.tensor([n, s.stop.flag, bool(fatal)], dtype=torch.float64,
                                                               device=loss.device)])
    total, n_all, stop, bad = all_sum(t, s.world).tolist()
    if stop:
        raise KeyboardInterrupt
    if bad:
        raise data_error(s.graph, f"streamed data: {fatal or 'bad values in another process share'}")
    return total / n_all, int(n_all)


def global_mean(s: Setup, value: torch.Tensor, n: int) -> float:
    """A per-process mean over n examples -> the mean over every process's examples."""
    if s.world.size == 1:
        return value.item()
    t = torch.stack([value.detach().double() * n, torch.tensor(float(n), dtype=torch.float64, device=value.device)])
    total, n_all = all_sum(t, s.world).tolist()
    return total / max(n_all, 1)


def lr_changes_per_step(spec) -> bool:
    """Epoch-unit schedules change the rate at epoch boundaries only; a warm-up counts in steps."""
    return spec.schedule.warmup is not None or getattr(spec.schedule.main.params, "unit", "epochs") == "steps"


def lr_for(step: int, s: Setup, st: RunState) -> float:
    """The schedule's rate for optimizer step `step`, times on_plateau's scale."""
    sched = s.spec.schedule
    return lr_at(step, s.spec.optimizer.params.lr, sched.main.kind, sched.main.params, sched.warmup,
                 s.steps_per_epoch, s.total_steps) * st.plateau["scale"]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_mult"]


def step(s: Setup, xb: torch.Tensor, yb: torch.Tensor, n_global: int, full_batch: bool, callbacks, run: Run):
    """One optimizer step on a batch: (the batch loss without penalties, the scores). Over several
    processes each scales its loss by its share of the global batch, so that DDP's average of
    the gradients is the gradient of the global batch's mean loss."""
    cfg, reg = s.spec.train, s.spec.regularize
    l1 = reg.l1
    l2 = 0.0 if s.spec.optimizer.kind != "adamw" and not full_batch else reg.l2  # else: weight_decay
    share = len(yb) * s.world.size / n_global
    scaler = s.precision.scaler
    out = {}

    def closure():
        s.optimizer.zero_grad(set_to_none=True)
        with s.forward():
            scores = s.net(xb)
        loss = s.loss_fn(scores.float(), yb)
        total = loss * share if share != 1 else loss
        total = total + P.penalty(s.penalized, l1, l2) if (l1 or l2) else total
        (scaler.scale(total) if scaler else total).backward()
        out["loss"], out["scores"] = loss, scores
        return total

    if full_batch:  # L-BFGS evaluates the closure as often as its line search needs
        s.optimizer.step(closure)
    else:
        closure()
        if scaler:
            scaler.unscale_(s.optimizer)
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.clip_norm)
        if cfg.clip_value:
            torch.nn.utils.clip_grad_value_(s.model.parameters(), cfg.clip_value)
        for cb in callbacks:
            cb.before_step(run)
        if scaler:
            scaler.step(s.optimizer)
            scaler.update()
        else:
            s.optimizer.step()
    if s.max_norm:
        P.apply_max_norm(s.max_norm, reg.max_norm)
    if s.ema is not None:
        params = [p.detach() for p in s.model.parameters()]  # (the statistics: ema_statistics, once an epoch)
        torch._foreach_lerp_(s.ema[:len(params)], params, 1 - cfg.ema)
    return out["loss"], out["scores"]


class EpochMeter:
    """The epoch's running loss (from the global loss each step reads anyway) and train accuracy,
    from predictions taken in blocks of steps and compared on the device."""

    def __init__(self, n_classes: int | None, dev: torch.device, labels: bool = False):
        self.classify, self.labels = n_classes is not None, labels  # labels: bce, scored output by output
        self.seen, self.loss_sum = 0, 0.0
        self.tally = torch.zeros(2, dtype=torch.long, device=dev)  # this process's correct, compared
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.t0 = time.perf_counter()

    def add(self, loss: float, n: int, scores: torch.Tensor, y: torch.Tensor) -> None:
        """loss: the mean over the n examples of the global batch; scores, y: this process's share."""
        self.seen += n
        self.loss_sum += loss * n
        if self.classify or self.labels:  # (several outputs: the first one's accuracy)
            self.pending.append((first(scores).detach(), first(y)))
            if len(self.pending) == ACCURACY_BLOCK:
                self._compare()

    def _compare(self) -> None:
        if self.pending:
            scores, ys = (torch.cat(t) for t in zip(*self.pending))
            self.tally += torch.stack(hits(scores, ys, self.labels))
            self.pending.clear()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def result(self, world: World) -> dict:
        self._compare()
        correct, compared = all_sum(self.tally, world).tolist() if self.classify or self.labels else (0, 0)
        return {"train_loss": self.loss_sum / max(self.seen, 1),
                "train_accuracy": correct / compared if compared else None}


def score(s: Setup, feed) -> tuple[float, float | None]:
    """(loss, accuracy) of the model in eval mode over a split, every process scoring its share."""
    was = s.model.training
    s.model.eval()
    tot = torch.zeros(5, dtype=torch.float64, device=s.dev)  # loss sum, examples, correct, compared, bad data
    batch = max(1, s.batch // s.world.size) if s.data.plan.cache == "stream" else 1024
    labels = LOSSES[s.spec.loss.kind].predicts == "labels"
    with torch.inference_mode():
        for xb, yb in feed.eval_batches(s.world, batch):
            with s.forward():
                out = s.model(xb)
            out = out.float()
            tot[0] += s.loss_fn(out, yb).double() * len(yb)
            tot[1] += len(yb)
            if s.n_classes is not None or labels:  # (several outputs: the first one's accuracy)
                tot[2:4] += torch.stack(hits(first(out), first(yb), labels))
    s.model.train(was)
    fatal = getattr(feed, "fatal", None)  # bad streamed data (its batches were left out) stops the run
    tot[4] = bool(fatal)
    loss, n, correct, compared, bad = all_sum(tot, s.world).tolist()
    if bad:
        raise data_error(s.graph, f"streamed data: {fatal or 'bad values in another process share'}")
    return loss / max(n, 1), (correct / compared if compared else None)


def account_unreadable(s: Setup, split: str, bad: list, log, progress) -> None:
    """Unreadable examples met in a pass over a split ("load": while loading; every example is
    met once per pass): listed once each in the run's log and on the screen by rank 0; the run
    stops when they are more than `data max_bad` of the source. Every rank calls this at the same
    point: streamed data's are gathered from every rank."""
    if split != "load" and s.data.plan.cache == "stream":
        bad = distributed.gather_lists(bad, s.world)
    before = {e[1] for part in s.unreadable.values() for e in part}
    s.unreadable[split] = bad
    for _, file, why in bad:
        if file not in before:
            before.add(file)
            log.write({"unreadable": file, "why": why, "split": split})
            progress.note(f"warning: skipped an unreadable image: {file} ({why})")
    known = {e[1]: e for part in s.unreadable.values() for e in part}
    check_bad(s.graph, list(known.values()), s.data.n_source)


def averaged(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """What `train ema` keeps for the averaged model: the parameters (averaged every step) and the
    normalization layers' running statistics (float buffers, measured for the averaged weights by
    `ema_statistics`)."""
    return [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if b.is_floating_point())]


def ema_statistics(s: Setup, limit: int = 4096) -> None:
    """Batchnorm's running statistics for the averaged weights, measured on up to `limit` training
    examples (this process's share) as torch.optim.swa_utils.update_bn does: the raw weights'
    statistics (or an average of them, which holds the initial 0 and 1 for long) do not fit the
    averaged weights (a conv + batchnorm net tested at 20% with them, 88% with measured ones).
    Only batchnorm uses batch statistics here (dropout is off, so no random number is drawn)."""
    norms = [m for m in s.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if s.ema is None or not norms:
        return
    was = s.model.training
    kept = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    with ema_weights(s), torch.no_grad():
        s.model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
            m.train()
        seen = 0
        for xb, _ in s.data.train.eval_batches(s.world, max(1, s.batch // s.world.size)):
            if len(xb) > 1:  # (batchnorm needs 2)
                with s.forward():
                    s.model(xb)
            seen += len(xb)
            if seen >= limit:
                break
        for m, (momentum, count) in zip(norms, kept):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)
    s.model.train(was)


@contextlib.contextmanager
def ema_weights(s: Setup):
    """The averaged weights in the model for the block (evaluation), the raw ones after it."""
    _swap_ema(s)
    try:
        yield
    finally:
        _swap_ema(s)


def _swap_ema(s: Setup) -> None:
    if s.ema is not None:
        with torch.no_grad():
            for (_, p), e in zip(averaged(s.model), s.ema):
                tmp = p.detach().clone()
                p.copy_(e)
                e.copy_(tmp)


def _diverged(s: Setup, st: RunState, loss: float, where: str) -> NncError:
    return diverged(loss, st.start_loss, where, s.spec.optimizer.params.lr, str(s.out / "last.safetensors"))


def improved(value: float, best: float | None, metric: str, min_delta: float = 0.0) -> bool:
    return best is None or (value > best + min_delta if "accuracy" in metric else value < best - min_delta)


# ---------------------------------------------------------------- checkpoints and the end


def save(s: Setup, st: RunState, kind: str, info: dict) -> None:
    """`best` or `last`: the (averaged, with ema) weights, statistics and classes; `last` also
    holds the optimizer, RNG and run state for --resume. Rank 0 alone writes them."""
    if not s.world.main:
        return
    weights = s.model.state_dict()
    if s.ema is not None:  # checkpoints hold the averaged weights
        weights = dict(weights)
        for (name, _), e in zip(averaged(s.model), s.ema):
            weights[name] = e
    spec = s.spec
    ck = checkpoint.Checkpoint(spec.text, s.spec_path, weights, s.stats, s.data.classes, spec.overrides, info,
                               spec_files=dict(spec.files))
    if kind == "last":
        tensors_, meta = state.optimizer_to_tensors(s.optimizer)
        ck.state = {**tensors_, **state.rng_to_tensors(s.shuffle)}
        if s.aug_gen is not None:
            ck.state["rng/augment"] = s.aug_gen.get_state()
        if s.ema is not None:  # model/ holds the average, so resume needs the raw weights too
            ck.state.update({f"raw/{name}": p for name, p in averaged(s.model)})
        ck.state_meta = {"optimizer": meta, "book": st.saved()}
        if s.precision.scaler is not None:
            ck.state_meta["scaler"] = s.precision.scaler.state_dict()
    checkpoint.save(s.out / f"{kind}.safetensors", ck)


def finish(s: Setup, st: RunState, run: Run, callbacks: list, log, progress, plots: str) -> dict:
    """The best weights back in the model (rank 0 reads them, every rank gets them), scored on the
    test split; the end-of-run pictures."""
    if s.world.main:
        s.model.load_state_dict(checkpoint.load(s.out / "best.safetensors").model)
    distributed.broadcast_model(s.model, s.world)
    test = score(s, s.data.test) if s.data.test.n else None
    account_unreadable(s, "test", s.data.test.problems()[0], log, progress)
    final = {"test_loss": test[0] if test else None, "test_accuracy": test[1] if test else None,
             "best_epoch": st.best_epoch, "epochs": st.epoch, "best_checkpoint": str(s.out / "best.safetensors"),
             "time": time.perf_counter() - s.t_start, "params": s.graph.n_params, "plots": []}
    if not s.world.main:
        return final
    from nnc.runtime.plots import end_pictures

    log.write({"final": final})
    for cb in callbacks:
        cb.end(run)
    log.close()
    final["plots"] = [str(p) for p in end_pictures(s.out, s.graph, callbacks, plots)]
    return final


def wrap_up(callbacks: list, run: Run, log: MetricsLog, out: Path, plots: str = "wait") -> None:
    """What a run that stops early still leaves: closed logs, the pictures of what ran.
    A failure here must not hide the reason the run stopped."""
    from nnc.runtime.plots import end_pictures

    for step_ in [*(lambda cb=cb: cb.end(run) for cb in callbacks), log.close,
                  lambda: end_pictures(out, run.graph, callbacks, plots)]:
        try:
            step_()
        except Exception:
            logging.getLogger(__name__).warning("could not finish the run's outputs", exc_info=True)
