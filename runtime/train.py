"""`nnc train`: a babysat training run, read top to bottom.

The data set lives in memory as tensors on the device and is batched by slicing, never by
a per-sample DataLoader. Every epoch ends with a validation pass, one line of metrics, the
`last` checkpoint (with optimizer and RNG state, for --resume) and, when it improved, the
`best` one. The run always ends holding its best weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nnc.compiler.graph import Graph
from nnc.compiler.layers import LAYERS
from nnc.compiler.torch_module import build_model
from nnc.compiler.vocab.augment import augment_batch
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.schedules import Plateau, lr_at
from nnc.diagnostics import EXIT_DIVERGED, Diagnostic, NncError
from nnc.files import make_dir
from nnc.runtime import checkpoint, preprocess, state
from nnc.runtime import param_groups as P
from nnc.runtime.data import Splits, load_splits
from nnc.runtime.device import pick_device
from nnc.runtime.evaluate import evaluate

EXPLODE = 3.0  # the notes: stop when the cost is ever > 3x the original cost


@dataclass
class Run:
    """What callbacks (monitors) may read: the live objects of a run."""

    graph: Graph
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    out: Path
    device: torch.device
    log: "MetricsLog"
    epoch: int = 0
    step: int = 0
    loss: float = math.nan
    extra: dict = field(default_factory=dict)


class MetricsLog:
    """metrics.jsonl (one JSON object per line) and TensorBoard scalars."""

    def __init__(self, out: Path, resume: bool):
        self.path = out / "metrics.jsonl"
        self.file = open(self.path, "a" if resume else "w")
        self._tb = None
        self.out = out

    @property
    def tb(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"))
        return self._tb

    def write(self, record: dict, tb_step: int | None = None) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if tb_step is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                    self.tb.add_scalar(k, v, tb_step)

    def close(self) -> None:
        self.file.close()
        if self._tb is not None:
            self._tb.close()


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


def _continue_outputs(src: Path, out: Path, epochs: int) -> None:
    """A resumed run's metrics.jsonl holds exactly the epochs its checkpoint has seen: records a
    killed run wrote after its last checkpoint (a partial epoch, a `final` line) are dropped, and
    a run continued into another directory takes the history and `best` along."""
    import shutil

    records = src / "metrics.jsonl"
    lines = records.read_text().splitlines() if records.is_file() else []
    kept = [l for l in lines if l.strip() and (r := json.loads(l)).get("epoch", 0) <= epochs and "final" not in r]
    (out / "metrics.jsonl").write_text("".join(l + "\n" for l in kept))
    if src.resolve() != out.resolve() and (src / "best.safetensors").is_file():
        shutil.copyfile(src / "best.safetensors", out / "best.safetensors")


def _wrap_up(callbacks: list, run: Run, log: MetricsLog, out: Path) -> None:
    """What a run that stops early still leaves: the monitors' pictures, closed logs, loss curves.
    A failure here must not hide the reason the run stopped."""
    from nnc.runtime.plots import training_curves

    for step in [*(lambda cb=cb: cb.end(run) for cb in callbacks), log.close,
                 lambda: training_curves(out / "metrics.jsonl", out)]:
        try:
            step()
        except Exception:
            logging.getLogger(__name__).warning("could not finish the run's outputs", exc_info=True)


def train(graph: Graph, out: str | Path, device: str = "auto", resume: str | None = None,
          quiet: bool = False, callbacks: list | None = None) -> dict:
    """Train the graph's model; return the final metrics. Raises NncError (exit 1) on bad
    input and NncError(exit 3) when the loss explodes."""
    spec, cfg = graph.spec, graph.spec.train
    out = Path(out)
    make_dir(out, "run directory")
    if callbacks is None:  # the babysitting monitors are on by default; callbacks=[] turns them off
        from nnc.runtime.monitors import default_monitors

        callbacks = default_monitors(graph)
    if spec.search:
        r = spec.search[0]
        raise NncError(Diagnostic(f"this spec has {len(spec.search)} search range(s) ({', '.join(s.path for s in spec.search)}): "
                                  "nnc train needs one value for each", r.span, spec.source,
                                  "run `nnc search` on it, or fix a value with --set"))
    torch.manual_seed(cfg.seed)
    dev = pick_device(cfg.device, "the spec's train device") if device == "auto" else pick_device(device)
    amp = dev.type == "cuda"  # bf16 autocast on GPUs; CPUs train in float32
    forward_ctx = (lambda: torch.autocast(dev.type, torch.bfloat16)) if amp else contextlib.nullcontext

    # --- data: raw splits, preprocessing fitted on the training split only
    splits: Splits = load_splits(graph)
    steps = [(c.kind, c.params) for c in spec.data.preprocess]
    stats = preprocess.fit(steps, splits.train.x) if steps and spec.model.input.kind != "tokens" else {}

    def tensors(split):
        x = preprocess.apply(stats, split.x.astype(np.float32)) if stats else split.x
        return torch.as_tensor(np.ascontiguousarray(x)).to(dev), torch.as_tensor(split.y).to(dev)

    (xtr, ytr), (xva, yva), (xte, yte) = (tensors(s) for s in (splits.train, splits.val, splits.test))
    loss_def = LOSSES[spec.loss.kind]
    loss_fn = loss_def.build(spec.loss.params)
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
    optimizer = opt_def.build(spec.optimizer.params, groups)
    penalized = P.decayed(model, graph)
    l1, l2_in_loss = spec.regularize.l1, (0.0 if coupled else spec.regularize.l2)
    max_norm = P.max_norm_targets(model, graph) if spec.regularize.max_norm else []
    ema = [p.detach().clone() for p in model.parameters()] if cfg.ema else None
    lr0 = spec.optimizer.params.lr
    n_train = len(xtr)
    batch = n_train if opt_def.full_batch else min(cfg.batch, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    total_steps = steps_per_epoch * cfg.epochs
    shuffle = torch.Generator(device="cpu").manual_seed(cfg.seed)
    aug = [(c.kind, c.params) for c in spec.data.augment]
    aug_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1) if aug else None

    # --- bookkeeping (all of it restored by --resume)
    # the metric that picks `best` (check made sure an early_stop metric exists for this spec)
    watch = cfg.early_stop.metric if cfg.early_stop else (
        ("val_accuracy" if n_classes else "val_loss") if len(xva) else "train_loss")
    book = {"epoch": 0, "step": 0, "best": None, "best_epoch": -1, "bad_epochs": 0, "start_loss": None,
            "plateau": {"scale": 1.0, "best": None, "bad": 0}}
    if resume:
        ck = checkpoint.load(Path(resume) / "last.safetensors", with_state=True)
        model.load_state_dict(ck.model)
        if ema is not None:  # model/ holds the average; the raw weights the optimizer left are in state/raw/
            with torch.no_grad():
                for (name, p), e in zip(model.named_parameters(), ema):
                    e.copy_(p)
                    p.copy_(ck.state[f"raw/{name}"])
        state.optimizer_from_tensors(optimizer, ck.state, ck.state_meta["optimizer"])
        state.rng_from_tensors(ck.state, shuffle)
        if aug_gen is not None and "rng/augment" in ck.state:
            aug_gen.set_state(ck.state["rng/augment"])
        book.update(ck.state_meta["book"])
        stats = {k: v for k, v in ck.preprocess.items()} or stats
        _continue_outputs(Path(resume), out, book["epoch"])
    plateau = Plateau(spec.schedule.main.params, lr0, book["plateau"]) if spec.schedule.main.kind == "on_plateau" else None
    log = MetricsLog(out, resume=bool(resume))
    applied = "".join(f" --set {o}" for o in spec.overrides)
    (out / "spec.nnspec").write_text(f"# nnc train applied:{applied} (rerun with them to reproduce this run)\n"
                                     + spec.text if applied else spec.text)
    run = Run(graph, model, optimizer, out, dev, log)
    for cb in callbacks:
        cb.start(run)

    # checkpoints name their spec by its absolute path: its relative data paths resolve from anywhere
    spec_path = str(Path(spec.source.name).resolve()) if Path(spec.source.name).is_file() else spec.source.name

    def save(kind: str, info: dict) -> None:
        weights = model.state_dict()
        if ema is not None:  # checkpoints hold the averaged weights
            weights = dict(weights)
            for (name, _), e in zip(model.named_parameters(), ema):
                weights[name] = e
        ck = checkpoint.Checkpoint(spec.text, spec_path, weights, stats, splits.classes, spec.overrides, info)
        if kind == "last":
            tensors, meta = state.optimizer_to_tensors(optimizer)
            ck.state = {**tensors, **state.rng_to_tensors(shuffle)}
            if aug_gen is not None:
                ck.state["rng/augment"] = aug_gen.get_state()
            if ema is not None:  # model/ holds the average, so resume needs the raw weights too
                ck.state.update({f"raw/{name}": p for name, p in model.named_parameters()})
            ck.state_meta = {"optimizer": meta, "book": book}
        checkpoint.save(out / f"{kind}.safetensors", ck)

    def swap_ema():
        if ema is not None:
            with torch.no_grad():
                for p, e in zip(model.parameters(), ema):
                    tmp = p.detach().clone()
                    p.copy_(e)
                    e.copy_(tmp)

    def set_lr(step: int) -> float:
        lr = lr_at(step, lr0, spec.schedule.main.kind, spec.schedule.main.params, spec.schedule.warmup,
                   steps_per_epoch, total_steps) * book["plateau"]["scale"]
        if lr != set_lr.last:  # most schedules change it once an epoch, if at all
            set_lr.last = lr
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_mult"]
        return lr

    set_lr.last = None
    # epoch-unit schedules change the rate at epoch boundaries only; a warm-up counts in steps
    lr_per_step = spec.schedule.warmup is not None or getattr(spec.schedule.main.params, "unit", "epochs") == "steps"

    # the notes' rule: a loss above 3x its start has exploded. A fine-tuned model starts far below
    # chance, where ordinary noise is 3x its start: the ceiling is at least 3x the chance loss
    chance = loss_def.chance(spec.loss.params, n_classes) if loss_def.chance and n_classes else 0.0

    def exploded(loss: float) -> bool:
        return not math.isfinite(loss) or loss > EXPLODE * max(book["start_loss"], chance, 1e-8)

    def diverged(loss: float, where: str) -> NncError:
        start = book["start_loss"]
        if start is None or not math.isfinite(start):  # broken before any update: no lr can be blamed
            return NncError(f"the loss is {loss:.4g} from the first step, before any update: the initial weights "
                            "or the data make it so, not the learning rate; `nnc doctor` checks the loss at init",
                            exit_code=EXIT_DIVERGED)
        return NncError(f"training diverged at {where}: loss {loss:.4g} (it started at {start:.4g}). "
                        f"The learning rate ({spec.optimizer.params.lr:g}) is the likely cause; try 3-10x lower. "
                        f"The last good checkpoint is {out / 'last.safetensors'}", exit_code=EXIT_DIVERGED)

    if not resume:  # so that a run that diverges at once still leaves a good checkpoint
        save("last", {"epoch": 0, "step": 0, "metrics": {}})

    # --- the loop
    from nnc.runtime.progress import EpochProgress

    progress = EpochProgress(quiet)
    sample_every = cfg.monitor_every if callbacks else 0
    t_start = time.perf_counter()
    model.train()
    try:
        for epoch in range(book["epoch"], cfg.epochs):
            run.epoch = epoch
            perm = torch.randperm(n_train, generator=shuffle).to(dev)
            # the epoch's running loss is summed from the loss.item() each step reads anyway; its
            # accuracy from the predictions, taken in blocks of steps and compared once at the end
            # (an op per step costs small models a few percent)
            seen, loss_sum, pending = 0, 0.0, []
            preds = torch.empty(n_train, dtype=torch.long, device=dev) if n_classes else None
            t0 = time.perf_counter()
            bar = progress.start(epoch, cfg.epochs, steps_per_epoch)
            for i in range(0, n_train, batch):
                step = book["step"]
                if lr_per_step or i == 0:
                    lr = set_lr(step)
                idx = perm[i:i + batch]
                xb, yb = xtr[idx], ytr[idx]
                if aug:
                    xb = augment_batch(xb, aug, aug_gen)
                sampled = sample_every and step % sample_every == 0

                def closure():
                    optimizer.zero_grad(set_to_none=True)
                    with forward_ctx():
                        scores = model(xb)
                    loss = loss_fn(scores.float(), yb)
                    total = loss + P.penalty(penalized, l1, l2_in_loss) if (l1 or l2_in_loss) else loss
                    total.backward()
                    closure.scores, closure.loss = scores, loss
                    return total

                if opt_def.full_batch:
                    optimizer.step(closure)
                else:
                    closure()
                    if cfg.clip_norm:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
                    if cfg.clip_value:
                        torch.nn.utils.clip_grad_value_(model.parameters(), cfg.clip_value)
                    if sampled:
                        for cb in callbacks:
                            cb.before_step(run)
                    optimizer.step()
                if max_norm:
                    P.apply_max_norm(max_norm, spec.regularize.max_norm)
                if ema is not None:
                    torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1 - cfg.ema)
                loss_v = closure.loss.item()
                if book["start_loss"] is None:
                    book["start_loss"] = loss_v
                if exploded(loss_v) and (step > 0 or not math.isfinite(loss_v)):
                    raise diverged(loss_v, f"epoch {epoch + 1}, step {step + 1}")
                run.step, run.loss = step, loss_v
                if sampled:
                    for cb in callbacks:
                        cb.after_step(run)
                nb = len(idx)
                seen += nb
                loss_sum += loss_v * nb
                if n_classes:
                    pending.append(closure.scores.detach())
                    if len(pending) == 32 or seen == n_train:
                        block = torch.cat(pending)
                        pending.clear()
                        torch.argmax(block, 1, out=preds[seen - len(block):seen])
                book["step"] = step + 1
                progress.advance(bar, loss_v, seen, time.perf_counter() - t0, lr)

            # --- end of epoch: validate, log, checkpoint, early stopping, plateau
            train_time = time.perf_counter() - t0
            # the epoch's last update has not been judged by a step's loss yet (with L-BFGS it is
            # the only one): judge it on that batch before anything is saved
            with torch.no_grad(), forward_ctx():
                after = loss_fn(model(xb).float(), yb).item()
            if exploded(after):
                raise diverged(after, f"the end of epoch {epoch + 1}")
            swap_ema()
            val = evaluate(model, xva, yva, loss_fn, n_classes, autocast=amp) if len(xva) else None
            swap_ema()
            if val and not math.isfinite(val.loss):
                raise diverged(val.loss, f"validation after epoch {epoch + 1}")
            rec = {"epoch": epoch + 1, "step": book["step"], "lr": lr, "train_loss": loss_sum / seen,
                   "train_accuracy": float((preds == ytr[perm]).sum()) / seen if n_classes else None,
                   "val_loss": val.loss if val else None, "val_accuracy": val.accuracy if val else None,
                   "samples_per_s": seen / train_time, "time": time.perf_counter() - t_start}
            for cb in callbacks:
                rec.update(cb.epoch_end(run, rec) or {})
            log.write(rec, tb_step=epoch + 1)
            progress.epoch_line(rec)
            metric = rec[watch]
            better = lambda a, b, d=0.0: b is None or (a > b + d if "accuracy" in watch else a < b - d)
            min_delta = cfg.early_stop.min_delta if cfg.early_stop else 0.0
            book["epoch"] = epoch + 1
            if better(metric, book["best"], min_delta):
                book.update(best=metric, best_epoch=epoch + 1, bad_epochs=0)
                save("best", {"epoch": epoch + 1, "step": book["step"], "metrics": rec})
            else:
                book["bad_epochs"] += 1
            if plateau is not None:
                plateau.update(rec.get(plateau.p.metric))
            save("last", {"epoch": epoch + 1, "step": book["step"], "metrics": rec})
            if cfg.early_stop and book["bad_epochs"] >= cfg.early_stop.patience:
                progress.note(f"early stop: {watch} has not improved for {cfg.early_stop.patience} epochs "
                              f"(best {book['best']:.4f} at epoch {book['best_epoch']})")
                break
    except BaseException:  # diverged or interrupted: keep the pictures and logs of what ran
        progress.close()
        _wrap_up(callbacks, run, log, out)
        raise
    finally:
        progress.close()

    # --- the end: best weights, test metrics, plots
    best = checkpoint.load(out / "best.safetensors")
    model.load_state_dict(best.model)
    test = evaluate(model, xte, yte, loss_fn, n_classes, autocast=amp) if len(xte) else None
    final = {"test_loss": test.loss if test else None, "test_accuracy": test.accuracy if test else None,
             "best_epoch": book["best_epoch"], "epochs": book["epoch"], "best_checkpoint": str(out / "best.safetensors"),
             "time": time.perf_counter() - t_start, "params": graph.n_params}
    log.write({"final": final})
    for cb in callbacks:
        cb.end(run)
    log.close()
    from nnc.runtime.plots import training_curves

    final["plots"] = [str(p) for p in training_curves(out / "metrics.jsonl", out)]
    final["plots"] += [str(out / f) for f in ("dashboard.png", "filters.png") if (out / f).is_file()]  # the monitors
    return final
