"""Babysitting monitors for `nnc train` (the notes' "what to watch while it learns").

On sampled steps (every `train.monitor_every` optimizer steps) the `Monitor` records, per
parameter tensor, the gradient norm and the update / weight ratio ||w_after - w_before|| /
||w_before|| (about 1e-3 is healthy), and per layer the activation mean and std, the fraction
of dead ReLUs (units that are zero for every example of the batch) and of saturated tanh /
sigmoid units. Records go to metrics.jsonl (`"monitor": "step"`) and TensorBoard (scalars;
once per epoch histograms of the activations, weights and gradients). At epoch end it adds
the epoch's averages, warnings (update ratios, dead or saturated units, activations that
collapse with depth) and the train / validation gap hint to the epoch record; at the end of
the run it draws dashboard.png and, for conv nets, filters.png (runtime/plots.py).

Which step is sampled is decided by counting optimizer steps, with hooks on the optimizer
(before and after `step()`): they also bracket full-batch optimizers (L-BFGS), whose step
evaluates the model many times inside `step(closure)`. The weights are copied in the step
pre-hook; the update is measured in `after_step`, so a max-norm projection counts as part of
it. Forward hooks exist only during the first training forward pass (grad enabled, training
mode) of a sampled step: one pre-hook on the model registers the per-layer hooks, the model's
forward hook removes them again.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from nnc.compiler.graph import Graph
from nnc.compiler.layers import LAYERS
from nnc.compiler.layers.base import Watch
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.runtime import param_groups as P

RATIO_LOW, RATIO_HIGH = 1e-5, 1e-1  # warn when a weight's epoch-mean update ratio is outside
ANNEALED = 0.1  # below this fraction of its starting value, the lr is the schedule's doing
COLLAPSE = 100.0  # tanh / sigmoid activation std falling by more than this from first to last layer
GAP_BIG, GAP_NONE, LOW_ACC = 0.10, 0.02, 0.95
HIST_SAMPLE = 4096  # entries of a tensor drawn (at random) into a histogram: ~0.1 ms each on a CPU
DASH_BINS = 40  # bins of the dashboard's per-layer histograms


def activation_stats(watch: Watch, out: torch.Tensor) -> dict[str, torch.Tensor]:
    """mean, std and (as the layer's `Watch` says) the dead or saturated fraction of one layer's
    output (B, ...)."""
    out = out.detach().float()
    s = {"mean": out.mean(), "std": out.std()}
    if watch.dead:
        dead = out <= 0 if watch.dead == "<=0" else out == 0
        s["dead"] = dead.reshape(len(out), -1).all(0).float().mean()  # a unit: one (channel, position)
    elif watch.bounds:
        lo, hi = watch.bounds
        s["saturated"] = ((out < lo + 0.01) | (out > hi - 0.01)).float().mean()
    return s


_GEN = torch.Generator().manual_seed(0)


def _sample(t: torch.Tensor) -> torch.Tensor:
    """All of `t`, or HIST_SAMPLE of its entries drawn at random (a stride could alias with
    the channel layout), as a float CPU copy."""
    flat = t.detach().reshape(-1)
    if flat.numel() > HIST_SAMPLE:
        flat = flat[torch.randint(flat.numel(), (HIST_SAMPLE,), generator=_GEN).to(flat.device)]
    return flat.float().cpu().clone()


def _histogram(out: torch.Tensor, bins: int = 64) -> dict:
    """add_histogram_raw's arguments, computed by torch (TensorBoard's own add_histogram goes
    through numpy and measurably slows the training epochs that follow on a 2-core CPU)."""
    x = _sample(out)
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        x = torch.zeros(1)
    lo, hi = x.min().item(), x.max().item()
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = torch.histogram(x, bins=bins, range=(lo, hi))
    return {"min": lo, "max": hi, "num": x.numel(), "sum": x.sum().item(), "sum_squares": x.pow(2).sum().item(),
            "bucket_limits": edges[1:].tolist(), "bucket_counts": counts.tolist()}


def _dash_histogram(watch: Watch, out: torch.Tensor) -> dict:
    """A compact histogram of one layer's output for dashboard.png: tanh on [-1, 1], sigmoid
    on [0, 1], anything else on its own range; for ReLUs the nonzero outputs, with the
    fraction of zeros beside (their spike would flatten the rest)."""
    x = _sample(out)
    x = x[torch.isfinite(x)]
    zero = None
    if watch.dead and x.numel():
        nz = x[x != 0]
        zero, x = 1 - nz.numel() / x.numel(), nz
    lo, hi = watch.bounds or (x.min().item() if x.numel() else 0.0, x.max().item() if x.numel() else 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    counts = torch.histc(x, bins=DASH_BINS, min=lo, max=hi) if x.numel() else torch.zeros(DASH_BINS)
    h = {"lo": lo, "hi": hi, "counts": [int(c) for c in counts.tolist()]}
    return h if zero is None else {**h, "zero": zero}


def _some(ratios: list[tuple[str, float]]) -> str:
    """'fc1.weight: update/weight ratio 2e-06', or one phrase for several tensors."""
    if len(ratios) == 1:
        return f"{ratios[0][0]}: update/weight ratio {ratios[0][1]:.0e}"
    lo, hi = min(r for _, r in ratios), max(r for _, r in ratios)
    return f"{len(ratios)} weights ({ratios[0][0]} .. {ratios[-1][0]}): update/weight ratios {lo:.0e} .. {hi:.0e}"


class Monitor:
    def __init__(self, graph: Graph, histograms: bool = True, pictures: bool = True):
        self.graph = graph
        self.every = graph.spec.train.monitor_every
        self.histograms, self.pictures = histograms, pictures
        self.layers = [(l.path, l.kind) for l in graph.layers() if LAYERS[l.kind].watch]
        self.kinds = dict(self.layers)
        self.role = P.roles(graph)
        self.full_batch = OPTIMIZERS[graph.spec.optimizer.kind].full_batch
        self.lr0 = graph.spec.optimizer.params.lr
        self.own: list = []
        self.handles: list = []

    # --- which step is sampled: counted by the optimizer hooks, synced with train.py in after_step
    def _sampled(self) -> bool:
        return bool(self.every) and self.steps % self.every == 0

    def _pre(self, module, args):
        if not module.training or not torch.is_grad_enabled() or not self._sampled() or self.acts_step == self.steps:
            return  # evaluation, a no-grad check of the loss, or a later forward of the same step
        self.acts_step, self.acts = self.steps, {}
        for path, kind in self.layers:
            sub = module.get_submodule(path)
            self.handles.append(sub.register_forward_hook(self._capture(path, kind)))

    def _capture(self, path: str, kind: str):
        def hook(module, args, out):
            self.acts[path] = (kind, out.detach())
        return hook

    def _post(self, module, args, out):
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _grads(self) -> None:
        with torch.no_grad():
            norms = torch.stack([p.grad.norm() if p.grad is not None else torch.zeros((), device=p.device)
                                 for _, p in self.params]).tolist()
            self.grad_norms = {n: v for (n, _), v in zip(self.params, norms)}
            if self.hist_due():
                self.tb_tensors += [(f"gradients/{n}", _sample(p.grad)) for n, p in self.params if p.grad is not None]

    def _opt_pre(self, optimizer, args, kwargs):
        if not self._sampled():
            return
        self.snap_step = self.steps
        with torch.no_grad():
            self.before = [p.detach().clone() for _, p in self.params]
        self.grad_norms = {}
        if self.hist_due():
            self.tb_tensors = [(f"weights/{n}", _sample(p)) for n, p in self.params]
        if not self.full_batch:  # the gradients of this step; L-BFGS computes them inside step()
            self._grads()

    def _opt_post(self, optimizer, args, kwargs):
        if self._sampled() and self.full_batch and self.snap_step == self.steps:
            self._grads()  # at the last evaluation inside the step
        self.steps += 1

    def hist_due(self) -> bool:
        """TensorBoard histograms: on the first sampled step of each epoch."""
        return self.histograms and self.hist_epoch != self.run.epoch

    # --- the callback protocol of runtime/train.py
    def start(self, run) -> None:
        self.run, self.handles, self.acts = run, [], {}
        # optimizer steps done; 0 at a fresh start (a resumed run syncs at its first after_step)
        self.steps, self.acts_step, self.snap_step = getattr(run, "step", 0) or 0, -1, -1
        self.params = [(n, p) for n, p in run.model.named_parameters() if p.requires_grad]
        self.before: list[torch.Tensor] = []
        self.grad_norms: dict[str, float] = {}
        self.tb_tensors: list[tuple[str, torch.Tensor]] = []
        self.epoch_ratios: dict[str, list[float]] = defaultdict(list)
        self.epoch_zero: dict[str, int] = defaultdict(int)
        self.epoch_lrs: list[float] = []
        self.epoch_acts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.hist_epoch = self.dash_epoch = -1
        self.tb_queue: list[tuple] = []
        self.own = [run.model.register_forward_pre_hook(self._pre), run.model.register_forward_hook(self._post)]
        opt = getattr(run, "optimizer", None)
        if opt is not None:
            self.own += [opt.register_step_pre_hook(self._opt_pre), opt.register_step_post_hook(self._opt_post)]

    def before_step(self, run) -> None:
        """Nothing to do: the optimizer step pre-hook copies the weights (for every optimizer)."""

    def _lr(self, run) -> float | None:
        opt = getattr(run, "optimizer", None)
        if opt is None or not opt.param_groups:
            return None
        g = opt.param_groups[0]
        return g["lr"] / g.get("lr_mult", 1.0)

    def after_step(self, run) -> None:
        rec = {"monitor": "step", "epoch": run.epoch + 1, "step": run.step, "loss": run.loss}
        lr = self._lr(run)
        if lr is not None:
            rec["lr"] = lr
            self.epoch_lrs.append(lr)
        tb = self.tb_queue  # written at epoch end, outside the timed loop
        if self.before and self.snap_step == run.step:
            with torch.no_grad():
                pairs = torch.stack([torch.stack(((p.detach() - b).norm(), b.norm()))
                                     for (_, p), b in zip(self.params, self.before)]).tolist()
            # None: the weights were all zero (a bias initialized to 0), the ratio is undefined
            ratios = {n: u / w if w > 0 else None for (n, _), (u, w) in zip(self.params, pairs)}
            rec["update_ratio"] = ratios
            rec["grad_norm"] = self.grad_norms
            for n, r in ratios.items():
                if r == 0:
                    self.epoch_zero[n] += 1  # no update at all: not a small one (kept out of the mean)
                elif r is not None and math.isfinite(r):
                    self.epoch_ratios[n].append(r)
                    tb.append(("scalar", f"update_ratio/{n}", r, run.step))
            for n, g in self.grad_norms.items():
                tb.append(("scalar", f"grad_norm/{n}", g, run.step))
        self.before = []
        hist_now = self.hist_due()
        if hist_now:
            tb += [("histogram", tag, _histogram(t), run.step) for tag, t in self.tb_tensors]
        self.tb_tensors = []
        if self.acts and self.acts_step == run.step:
            stats = {path: activation_stats(LAYERS[kind].watch, out) for path, (kind, out) in self.acts.items()}
            flat = [(path, k, v) for path, s in stats.items() for k, v in s.items()]
            values = torch.stack([v for _, _, v in flat]).tolist() if flat else []
            act: dict[str, dict[str, float]] = defaultdict(dict)
            for (path, k, _), v in zip(flat, values):
                act[path][k] = v
                self.epoch_acts[path][k].append(v)
                tb.append(("scalar", f"activation_{k}/{path}", v, run.step))
            rec["activations"] = dict(act)
            if hist_now:
                tb += [("histogram", f"activations/{path}", _histogram(out), run.step) for path, (_, out) in self.acts.items()]
            if self.pictures and self.dash_epoch != run.epoch:  # for dashboard.png's histograms per layer
                self.dash_epoch = run.epoch
                rec["act_hist"] = {path: _dash_histogram(LAYERS[kind].watch, out) for path, (kind, out) in self.acts.items()
                                   if LAYERS[kind].activation}
        self.acts = {}
        if hist_now:
            self.hist_epoch = run.epoch
        self.steps = run.step + 1  # train.py's count is the truth (resume starts it above 0)
        run.log.write(rec)

    def flush_tb(self, run) -> None:
        """Write the queued scalars and histograms: one TensorBoard event per step holding all
        of that step's values (an add_scalar / add_histogram_raw call each costs ~10x more)."""
        if not self.tb_queue:
            return
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

        by_step: dict[int, list] = defaultdict(list)
        for kind, tag, value, step in self.tb_queue:
            if kind == "scalar":
                by_step[step].append(Summary.Value(tag=tag, simple_value=value))
            else:
                h = HistogramProto(min=value["min"], max=value["max"], num=value["num"], sum=value["sum"],
                                   sum_squares=value["sum_squares"], bucket_limit=value["bucket_limits"],
                                   bucket=value["bucket_counts"])
                by_step[step].append(Summary.Value(tag=tag, histo=h))
        writer = run.log.tb._get_file_writer()
        for step, values in by_step.items():
            writer.add_summary(Summary(value=values), global_step=step)
        self.tb_queue.clear()

    # --- epoch end: averages and warnings
    def _ratio_warnings(self, ratios: dict[str, float], collapsed: bool) -> tuple[list[str], list[str]]:
        """(warnings, notes) on the weights' epoch-mean update ratios (biases start at 0: their
        ratio is meaningless). A low ratio is blamed on the learning rate only when neither the
        schedule (lr annealed below ANNEALED of its start) nor collapsed activations explain it."""
        warnings, notes, low, high = [], [], [], []
        lr = sum(self.epoch_lrs) / len(self.epoch_lrs) if self.epoch_lrs else None
        scale = lr / self.lr0 if lr is not None and self.lr0 > 0 else 1.0
        schedule = self.graph.spec.schedule.main.kind
        weights = lambda names: [n for n in names if self.role.get(n, "weight") == "weight"]
        for n in weights(self.epoch_zero):
            if not self.epoch_ratios.get(n):
                warnings.append(f"{n}: no update (dead units or frozen?)")
        if self.full_batch:  # ~1e-3 is the heuristic for stochastic steps; L-BFGS line-searches whole ones
            return warnings, notes
        for n in weights(ratios):
            r = ratios[n]
            if r > RATIO_HIGH:
                high.append((n, r))
            elif r < RATIO_LOW and scale < ANNEALED:
                notes.append(f"{n}: update/weight ratio {r:.0e} with the lr at {lr:.1e}, {scale:.0e} of its start "
                             f"{self.lr0:g}: the {schedule} schedule has annealed it (at the starting lr: ~{r / scale:.0e})")
                if r / scale < RATIO_LOW:
                    low.append((n, r / scale))
            elif r < RATIO_LOW:
                low.append((n, r))
        if high:
            warnings.append(f"{_some(high)} (healthy ~1e-3; learning rate too high?)")
        if low:
            cause = ("the gradients vanish with the collapsed activations, not a low learning rate" if collapsed
                     else "learning rate too low?")
            warnings.append(f"{_some(low)}{' at the starting lr' if scale < ANNEALED else ''} (healthy ~1e-3; {cause})")
        return warnings, notes

    def _activation_warnings(self, acts: dict[str, dict[str, float]]) -> list[str]:
        warnings = [f"{path}: {100 * s['dead']:.0f}% dead ReLUs" for path, s in acts.items() if s.get("dead", 0) > 0.5]
        squash = [(path, s) for path, s in acts.items() if path in self.kinds and LAYERS[self.kinds[path]].watch.bounds]
        sat = [path for path, s in squash if s.get("saturated", 0) > 0.5]
        if len(sat) == 1:
            warnings.append(f"{sat[0]}: {100 * acts[sat[0]]['saturated']:.0f}% saturated units")
        elif sat:
            mean = sum(acts[p]["saturated"] for p in sat) / len(sat)
            warnings.append(f"{len(sat)} of {len(squash)} {'/'.join(sorted({self.kinds[p] for p in sat}))} layers are "
                            f">50% saturated ({sat[0]} .. {sat[-1]}, {100 * mean:.0f}% on average): weights too large "
                            "for these units? (xavier keeps them in range); saturated units pass no gradient")
        if len(squash) >= 2:
            (p0, s0), (p1, s1) = squash[0], squash[-1]
            if s0["std"] > 0 and s1["std"] < s0["std"] / COLLAPSE:
                warnings.append(f"activations collapse: std {s0['std']:.2g} at {p0} -> {s1['std']:.2g} at {p1} "
                                f"(x{s1['std'] / s0['std']:.0e} over {len(squash)} layers): the weights are too small "
                                "for this depth and the gradients vanish with them (xavier keeps the std)")
        return warnings

    def epoch_end(self, run, record: dict) -> dict:
        self.flush_tb(run)
        extra: dict = {}
        ratios = {n: 10 ** (sum(math.log10(r) for r in rs) / len(rs)) for n, rs in self.epoch_ratios.items() if rs}
        ratios.update({n: 0.0 for n in self.epoch_zero if n not in ratios})
        acts = {path: {k: sum(v) / len(v) for k, v in s.items()} for path, s in self.epoch_acts.items()}
        act_warnings = self._activation_warnings(acts)
        collapsed = any(w.startswith("activations collapse") for w in act_warnings)
        warnings, notes = self._ratio_warnings({n: r for n, r in ratios.items() if r > 0}, collapsed)
        warnings += act_warnings
        if ratios:
            extra["update_ratio"] = ratios
        if self.epoch_zero:
            extra["zero_updates"] = dict(self.epoch_zero)  # sampled steps where the tensor did not move
        if acts:
            extra["activations"] = acts
        tr, va = record.get("train_accuracy"), record.get("val_accuracy")
        # with ema, train accuracy is of the raw weights and val of their lagging average: that gap
        # says how far the average lags, not whether the model overfits
        if tr is not None and va is not None and not self.graph.spec.train.ema:
            gap = tr - va
            extra["gap"] = gap
            if gap > GAP_BIG:
                extra["gap_hint"] = f"train/val gap {100 * gap:.0f} points: overfitting, more regularization (l2, dropout) or data"
                warnings.append(extra["gap_hint"])
            elif gap < GAP_NONE and tr < LOW_ACC:
                extra["gap_hint"] = f"no train/val gap at {100 * tr:.0f}% train accuracy: underfitting, more capacity"
        if warnings:
            extra["warnings"] = warnings
        if notes:
            extra["notes"] = notes
        self.epoch_ratios.clear()
        self.epoch_zero.clear()
        self.epoch_lrs.clear()
        self.epoch_acts.clear()
        return extra

    def end(self, run) -> None:
        """Also called when the run diverged or was interrupted, possibly in its first step:
        every hook goes, whatever was queued is written."""
        for h in [*self.own, *self.handles]:
            h.remove()
        self.own, self.handles = [], []
        if getattr(self, "tb_queue", None):
            self.flush_tb(run)
        # the pictures (`pictures`: dashboard.png, filters.png) are drawn from the run directory
        # after the run (runtime/plots.py end_pictures), possibly by another process


def default_monitors(graph: Graph) -> list:
    return [Monitor(graph)]
