"""`nnc train`: a babysat training run, read top to bottom.

The data set lives in memory as tensors on the device and is batched by slicing, never by
a per-sample DataLoader. Every epoch ends with a validation pass, one line of metrics, the
`last` checkpoint (with optimizer and RNG state, for --resume) and, when it improved, the
`best` one. The run always ends holding its best weights.

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
from nnc.compiler.layers import LAYERS
from nnc.compiler.torch_module import build_model
from nnc.compiler.vocab.augment import augment_batch
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.schedules import Plateau, lr_at
from nnc.diagnostics import Diagnostic, NncError
from nnc.files import make_dir
from nnc.runtime import checkpoint, preprocess, state
from nnc.runtime import param_groups as P
from nnc.runtime.data import load_splits, tensors
from nnc.runtime.device import pick_device
from nnc.runtime.divergence import diverged, exploded
from nnc.runtime.evaluate import evaluate
from nnc.runtime.run_dir import MetricsLog, continue_outputs, write_spec_copy

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
    amp: bool  # bf16 autocast (CUDA)
    train: tuple[torch.Tensor, torch.Tensor]  # (x, y) on the device, preprocessed
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    stats: dict  # preprocessing statistics (numpy), stored in checkpoints
    classes: list[str] | None
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: object
    n_classes: int | None  # None: a regression loss
    batch: int
    steps_per_epoch: int
    total_steps: int
    shuffle: torch.Generator
    aug_gen: torch.Generator | None
    ema: list[torch.Tensor] | None  # the averaged weights, parameter by parameter
    penalized: list  # (for the L1 / in-loss L2 penalty)
    max_norm: list
    watch: str  # the metric that picks `best`
    chance: float  # the loss of uniform scores: the divergence rule's floor
    spec_path: str  # the spec by its absolute path: its relative data paths resolve from anywhere

    @property
    def spec(self):
        return self.graph.spec

    def forward(self):
        return torch.autocast(self.dev.type, torch.bfloat16) if self.amp else contextlib.nullcontext()


# ---------------------------------------------------------------- the loop


def train(graph: Graph, out: str | Path, device: str = "auto", resume: str | None = None,
          quiet: bool = False, callbacks: list | None = None, data=None, plots: str = "wait") -> dict:
    """Train the graph's model; return the final metrics. Raises NncError (exit 1) on bad
    input and NncError(exit 3) when the loss explodes. `data`: arrays (runtime.data's Arrays)
    handed over in memory by the Python API, in place of the spec's data source. `plots`: the
    end-of-run pictures drawn before returning ("wait"), in the background, or "off"."""
    from nnc.runtime.progress import EpochProgress

    spec, cfg = graph.spec, graph.spec.train
    out = Path(out)
    s, st = prepare(graph, out, device, resume, data)
    if callbacks is None:  # the babysitting monitors are on by default; callbacks=[] turns them off
        from nnc.runtime.monitors import default_monitors

        callbacks = default_monitors(graph)
    plateau = Plateau(spec.schedule.main.params, spec.optimizer.params.lr, st.plateau) \
        if spec.schedule.main.kind == "on_plateau" else None
    log = MetricsLog(out, resume=bool(resume))
    write_spec_copy(out, spec.text, spec.overrides)
    run = Run(graph, s.model, s.optimizer, out, s.dev, log)
    for cb in callbacks:
        cb.start(run)
    if not resume:  # so that a run that diverges at once still leaves a good checkpoint
        save(s, st, "last", {"epoch": 0, "step": 0, "metrics": {}})
    full_batch = OPTIMIZERS[spec.optimizer.kind].full_batch
    sample_every = cfg.monitor_every if callbacks else 0
    progress = EpochProgress(quiet)
    t_start = time.perf_counter()
    s.model.train()
    try:
        for epoch in range(st.epoch, cfg.epochs):
            run.epoch = epoch
            meter = EpochMeter(s.n_classes, s.dev)
            bar = progress.start(epoch, cfg.epochs, s.steps_per_epoch)
            for i, (xb, yb) in enumerate(batches(s)):
                # --- set the rate (epoch-unit schedules change it at epoch boundaries only)
                if i == 0 or lr_changes_per_step(spec):
                    st.lr = lr_for(st.step, s, st)
                    set_lr(s.optimizer, st.lr)
                sampled = bool(sample_every) and st.step % sample_every == 0
                # --- forward, backward, update
                loss, scores = step(s, xb, yb, full_batch, callbacks if sampled else (), run)
                loss_v = loss.item()
                if st.start_loss is None:
                    st.start_loss = loss_v
                if exploded(loss_v, st.start_loss, s.chance) and (st.step > 0 or not math.isfinite(loss_v)):
                    raise _diverged(s, st, loss_v, f"epoch {epoch + 1}, step {st.step + 1}")
                run.step, run.loss = st.step, loss_v
                if sampled:
                    for cb in callbacks:
                        cb.after_step(run)
                meter.add(loss_v, scores, yb)
                st.step += 1
                progress.advance(bar, loss_v, meter.seen, meter.elapsed(), st.lr)

            # --- evaluate: the last update judged on its batch, then the validation split
            train_time = meter.elapsed()
            with torch.no_grad(), s.forward():
                after = s.loss_fn(s.model(xb).float(), yb).item()
            if exploded(after, st.start_loss, s.chance):
                raise _diverged(s, st, after, f"the end of epoch {epoch + 1}")
            with ema_weights(s):
                val = evaluate(s.model, *s.val, s.loss_fn, s.n_classes, autocast=s.amp) if len(s.val[0]) else None
            if val and not math.isfinite(val.loss):
                raise _diverged(s, st, val.loss, f"validation after epoch {epoch + 1}")
            rec = {"epoch": epoch + 1, "step": st.step, "lr": st.lr, **meter.result(),
                   "val_loss": val.loss if val else None, "val_accuracy": val.accuracy if val else None,
                   "samples_per_s": meter.seen / train_time, "time": time.perf_counter() - t_start}
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
                break
    except BaseException:  # diverged or interrupted: keep the pictures and logs of what ran
        progress.close()
        wrap_up(callbacks, run, log, out, plots)
        raise
    finally:
        progress.close()
    return finish(s, st, run, callbacks, log, t_start, plots)


# ---------------------------------------------------------------- preparation


def prepare(graph: Graph, out: Path, device: str, resume: str | None, data=None) -> tuple[Setup, RunState]:
    """Data, model, optimizer and the run's state, restored from `resume`'s last checkpoint."""
    spec, cfg = graph.spec, graph.spec.train
    make_dir(out, "run directory")
    if spec.search:
        r = spec.search[0]
        raise NncError(Diagnostic(f"this spec has {len(spec.search)} search range(s) ({', '.join(s.path for s in spec.search)}): "
                                  "nnc train needs one value for each", r.span, spec.document,
                                  "run `nnc search` on it, or fix a value with --set"))
    torch.manual_seed(cfg.seed)
    dev = pick_device(cfg.device, "the spec's train device") if device == "auto" else pick_device(device)
    ck = checkpoint.load(Path(resume) / "last.safetensors", with_state=True) if resume else None

    # --- data: raw splits, preprocessing fitted on the training split only (or the run's own)
    splits = load_splits(graph, data)
    stats = (dict(ck.preprocess) if ck else None) or preprocess.fit_for(spec, splits.train.x)
    xtr, ytr = tensors(splits.train, stats, dev)
    loss_def = LOSSES[spec.loss.kind]
    n_classes = graph.output.features if loss_def.classification else None

    # --- model and optimizer
    model = build_model(graph).to(dev)
    if any(LAYERS[l.kind].channels_last for l in graph.layers()):  # ~1.1-1.2x faster conv training in eager mode
        model = model.to(memory_format=torch.channels_last)
        xtr = xtr.contiguous(memory_format=torch.channels_last)
    if cfg.finetune and not resume:
        _finetune(model, graph)
    opt_def = OPTIMIZERS[spec.optimizer.kind]
    # the notes' L2 is the optimizer's weight_decay, except for AdamW (decoupled) and L-BFGS (which
    # takes one parameter group): there it is added to the loss
    coupled = spec.optimizer.kind != "adamw" and not opt_def.full_batch
    groups = P.param_groups(model, graph, coupled_l2=coupled)
    if opt_def.full_batch:
        groups = [{"params": [p for g in groups for p in g["params"]], "lr_mult": 1.0}]
    n_train = len(xtr)
    batch = n_train if opt_def.full_batch else min(cfg.batch, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    s = Setup(graph, out, dev, dev.type == "cuda", (xtr, ytr), tensors(splits.val, stats, dev),
              tensors(splits.test, stats, dev), stats, splits.classes, model,
              opt_def.build(spec.optimizer.params, groups), loss_def.build(spec.loss.params), n_classes,
              batch, steps_per_epoch, steps_per_epoch * cfg.epochs,
              torch.Generator(device="cpu").manual_seed(cfg.seed),
              torch.Generator(device=dev).manual_seed(cfg.seed + 1) if spec.data.augment else None,
              [p.detach().clone() for p in model.parameters()] if cfg.ema else None,
              P.decayed(model, graph), P.max_norm_targets(model, graph) if spec.regularize.max_norm else [],
              _watched_metric(graph, n_classes, len(splits.val)),
              loss_def.chance(spec.loss.params, n_classes) if loss_def.chance and n_classes else 0.0,
              str(Path(spec.document.name).resolve()) if Path(spec.document.name).is_file() else spec.document.name)
    st = RunState()
    if ck is not None:
        _restore(s, st, ck)
        continue_outputs(Path(resume), out, st.epoch)
    return s, st


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
            for (name, p), e in zip(s.model.named_parameters(), s.ema):
                e.copy_(p)
                p.copy_(ck.state[f"raw/{name}"])
    state.optimizer_from_tensors(s.optimizer, ck.state, ck.state_meta["optimizer"])
    state.rng_from_tensors(ck.state, s.shuffle)
    if s.aug_gen is not None and "rng/augment" in ck.state:
        s.aug_gen.set_state(ck.state["rng/augment"])
    for k, v in ck.state_meta["book"].items():
        setattr(st, k, v)


def _finetune(model: torch.nn.Module, graph: Graph) -> None:
    ft = graph.spec.train.finetune
    ckpt = checkpoint.load(graph.spec.locate(ft.path))
    own = model.state_dict()
    skip = set(ft.skip)
    load = {}
    for name, t in ckpt.model.items():
        if skip & set(name.split(".")[:-1]) or name not in own:
            continue
        if own[name].shape != t.shape:
            raise NncError.at(graph.spec.spans.get("train.finetune"),
                              f"finetune: {name} has shape {tuple(t.shape)} in {ft.path} but {tuple(own[name].shape)} here",
                              help="add its layer to skip=(...) to train it from scratch")
        load[name] = t
    if not load:
        raise NncError.at(graph.spec.spans.get("train.finetune"),
                          f"finetune: no tensor of {ft.path} matches a layer of this model by name "
                          f"(it has {', '.join(sorted({n.rsplit('.', 1)[0] for n in ckpt.model})[:6])}, ...)",
                          help="the layers to carry over must keep their names in the new spec")
    model.load_state_dict(load, strict=False)


# ---------------------------------------------------------------- the pieces of a step


def batches(s: Setup):
    """One epoch of (x, y) batches: a fresh permutation of the training split, sliced, augmented."""
    x, y = s.train
    perm = torch.randperm(len(x), generator=s.shuffle).to(s.dev)
    aug = [(c.kind, c.params) for c in s.spec.data.augment]
    for i in range(0, len(x), s.batch):
        idx = perm[i:i + s.batch]
        xb = x[idx]
        yield (augment_batch(xb, aug, s.aug_gen) if aug else xb), y[idx]


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


def step(s: Setup, xb: torch.Tensor, yb: torch.Tensor, full_batch: bool, callbacks, run: Run):
    """One optimizer step on a batch: (the batch loss without penalties, the scores)."""
    cfg, reg = s.spec.train, s.spec.regularize
    l1 = reg.l1
    l2 = 0.0 if s.spec.optimizer.kind != "adamw" and not full_batch else reg.l2  # else: weight_decay
    out = {}

    def closure():
        s.optimizer.zero_grad(set_to_none=True)
        with s.forward():
            scores = s.model(xb)
        loss = s.loss_fn(scores.float(), yb)
        total = loss + P.penalty(s.penalized, l1, l2) if (l1 or l2) else loss
        total.backward()
        out["loss"], out["scores"] = loss, scores
        return total

    if full_batch:  # L-BFGS evaluates the closure as often as its line search needs
        s.optimizer.step(closure)
    else:
        closure()
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.clip_norm)
        if cfg.clip_value:
            torch.nn.utils.clip_grad_value_(s.model.parameters(), cfg.clip_value)
        for cb in callbacks:
            cb.before_step(run)
        s.optimizer.step()
    if s.max_norm:
        P.apply_max_norm(s.max_norm, reg.max_norm)
    if s.ema is not None:
        torch._foreach_lerp_(s.ema, [p.detach() for p in s.model.parameters()], 1 - cfg.ema)
    return out["loss"], out["scores"]


class EpochMeter:
    """The epoch's running loss (from the loss.item() each step reads anyway) and train accuracy,
    from predictions taken in blocks of steps and compared on the device."""

    def __init__(self, n_classes: int | None, dev: torch.device):
        self.classify = n_classes is not None
        self.seen, self.loss_sum = 0, 0.0
        self.correct = torch.zeros((), dtype=torch.long, device=dev)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.t0 = time.perf_counter()

    def add(self, loss: float, scores: torch.Tensor, y: torch.Tensor) -> None:
        self.seen += len(y)
        self.loss_sum += loss * len(y)
        if self.classify:
            self.pending.append((scores.detach(), y))
            if len(self.pending) == ACCURACY_BLOCK:
                self._compare()

    def _compare(self) -> None:
        if self.pending:
            scores, ys = zip(*self.pending)
            self.correct += (torch.cat(scores).argmax(1) == torch.cat(ys)).sum()
            self.pending.clear()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def result(self) -> dict:
        self._compare()
        return {"train_loss": self.loss_sum / self.seen,
                "train_accuracy": float(self.correct) / self.seen if self.classify else None}


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
            for p, e in zip(s.model.parameters(), s.ema):
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
    holds the optimizer, RNG and run state for --resume."""
    weights = s.model.state_dict()
    if s.ema is not None:  # checkpoints hold the averaged weights
        weights = dict(weights)
        for (name, _), e in zip(s.model.named_parameters(), s.ema):
            weights[name] = e
    spec = s.spec
    ck = checkpoint.Checkpoint(spec.text, s.spec_path, weights, s.stats, s.classes, spec.overrides, info)
    if kind == "last":
        tensors_, meta = state.optimizer_to_tensors(s.optimizer)
        ck.state = {**tensors_, **state.rng_to_tensors(s.shuffle)}
        if s.aug_gen is not None:
            ck.state["rng/augment"] = s.aug_gen.get_state()
        if s.ema is not None:  # model/ holds the average, so resume needs the raw weights too
            ck.state.update({f"raw/{name}": p for name, p in s.model.named_parameters()})
        ck.state_meta = {"optimizer": meta, "book": st.saved()}
    checkpoint.save(s.out / f"{kind}.safetensors", ck)


def finish(s: Setup, st: RunState, run: Run, callbacks: list, log: MetricsLog, t_start: float, plots: str) -> dict:
    """The best weights back in the model, scored on the test split; the end-of-run pictures."""
    from nnc.runtime.plots import end_pictures

    best = checkpoint.load(s.out / "best.safetensors")
    s.model.load_state_dict(best.model)
    test = evaluate(s.model, *s.test, s.loss_fn, s.n_classes, autocast=s.amp) if len(s.test[0]) else None
    final = {"test_loss": test.loss if test else None, "test_accuracy": test.accuracy if test else None,
             "best_epoch": st.best_epoch, "epochs": st.epoch, "best_checkpoint": str(s.out / "best.safetensors"),
             "time": time.perf_counter() - t_start, "params": s.graph.n_params}
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
