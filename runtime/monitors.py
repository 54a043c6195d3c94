"""Babysitting monitors for `nnc train` (the notes' "what to watch while it learns").

On sampled steps (every `train.monitor_every` optimizer steps) the `Monitor` records, per
parameter tensor, the gradient norm and the update / weight ratio ||w_after - w_before|| / ||w_before||
(about 1e-3 is healthy), and per layer the activation mean and std, the fraction of dead ReLUs
(units that are zero for every example of the batch) and of saturated tanh / sigmoid units.
Records go to metrics.jsonl (`"monitor": "step"`) and TensorBoard (scalars, and activation
histograms once per epoch). At epoch end it adds the epoch's averages, warnings and the
train / validation gap hint to the epoch record; at the end of the run it draws dashboard.png
and, for conv nets, filters.png.

Which step is sampled is decided by counting optimizer steps, with hooks on the optimizer
(before and after `step()`): they also bracket full-batch optimizers (L-BFGS), whose step
evaluates the model many times inside `step(closure)`. The weights are copied in the step
pre-hook; the update is measured in `after_step`, so a max-norm projection counts as part of
it. Forward hooks exist only during the first training forward pass (grad enabled, training
mode) of a sampled step: one pre-hook on the model registers the per-layer hooks, the model's
forward hook removes them again.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import torch

from nnc.compiler.shapes import Graph
from nnc.runtime import params as P
from nnc.runtime.optimizers import OPTIMIZERS

RELU_LIKE = ("relu", "leaky_relu", "prelu", "elu")
SATURATING = ("tanh", "sigmoid")
WATCHED = RELU_LIKE + SATURATING + ("maxout", "dense", "conv", "batchnorm", "layernorm", "rnn", "lstm", "gru")
RATIO_LOW, RATIO_HIGH = 1e-5, 1e-1  # warn when a weight's epoch-mean update ratio is outside
ANNEALED = 0.1  # below this fraction of its starting value, the lr is the schedule's doing
GAP_BIG, GAP_NONE, LOW_ACC = 0.10, 0.02, 0.95


def activation_stats(kind: str, out: torch.Tensor) -> dict[str, torch.Tensor]:
    """mean, std and (by kind) the dead or saturated fraction of one layer's output (B, ...)."""
    out = out.detach().float()
    s = {"mean": out.mean(), "std": out.std()}
    if kind in ("relu", "prelu", "leaky_relu", "elu"):
        dead = out <= 0 if kind == "relu" else out == 0
        s["dead"] = dead.reshape(len(out), -1).all(0).float().mean()  # a unit: one (channel, position)
    elif kind == "tanh":
        s["saturated"] = (out.abs() > 0.99).float().mean()
    elif kind == "sigmoid":
        s["saturated"] = ((out < 0.01) | (out > 0.99)).float().mean()
    return s


def _histogram(out: torch.Tensor, bins: int = 64) -> dict:
    """add_histogram_raw's arguments, computed by torch (TensorBoard's own add_histogram goes
    through numpy and measurably slows the training epochs that follow on a 2-core CPU)."""
    x = out.detach().float().flatten().cpu()
    lo, hi = x.min().item(), x.max().item()
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = torch.histogram(x, bins=bins, range=(lo, hi))
    return {"min": lo, "max": hi, "num": x.numel(), "sum": x.sum().item(), "sum_squares": x.pow(2).sum().item(),
            "bucket_limits": edges[1:].tolist(), "bucket_counts": counts.tolist()}


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
        self.layers = [(l.path, l.kind) for l in graph.layers() if l.kind in WATCHED]
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

    def _opt_pre(self, optimizer, args, kwargs):
        if not self._sampled():
            return
        self.snap_step = self.steps
        with torch.no_grad():
            self.before = [p.detach().clone() for _, p in self.params]
        self.grad_norms = {}
        if not self.full_batch:  # the gradients of this step; L-BFGS computes them inside step()
            self._grads()

    def _opt_post(self, optimizer, args, kwargs):
        if self._sampled() and self.full_batch and self.snap_step == self.steps:
            self._grads()  # at the last evaluation inside the step
        self.steps += 1

    # --- the callback protocol of runtime/train.py
    def start(self, run) -> None:
        self.run, self.handles, self.acts = run, [], {}
        # optimizer steps done; 0 at a fresh start (a resumed run syncs at its first after_step)
        self.steps, self.acts_step, self.snap_step = getattr(run, "step", 0) or 0, -1, -1
        self.params = [(n, p) for n, p in run.model.named_parameters() if p.requires_grad]
        self.before: list[torch.Tensor] = []
        self.grad_norms: dict[str, float] = {}
        self.epoch_ratios: dict[str, list[float]] = defaultdict(list)
        self.epoch_zero: dict[str, int] = defaultdict(int)
        self.epoch_lrs: list[float] = []
        self.epoch_acts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.hist_epoch = -1
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
        if self.acts and self.acts_step == run.step:
            stats = {path: activation_stats(kind, out) for path, (kind, out) in self.acts.items()}
            flat = [(path, k, v) for path, s in stats.items() for k, v in s.items()]
            values = torch.stack([v for _, _, v in flat]).tolist() if flat else []
            act: dict[str, dict[str, float]] = defaultdict(dict)
            for (path, k, _), v in zip(flat, values):
                act[path][k] = v
                self.epoch_acts[path][k].append(v)
                tb.append(("scalar", f"activation_{k}/{path}", v, run.step))
            rec["activations"] = dict(act)
            if self.histograms and self.hist_epoch != run.epoch:
                self.hist_epoch = run.epoch
                for path, (_, out) in self.acts.items():
                    tb.append(("histogram", f"activations/{path}", _histogram(out), run.step))
        self.acts = {}
        self.steps = run.step + 1  # train.py's count is the truth (resume starts it above 0)
        run.log.write(rec)

    def flush_tb(self, run) -> None:
        if self.tb_queue:
            tb = run.log.tb
            for kind, tag, value, step in self.tb_queue:
                if kind == "scalar":
                    tb.add_scalar(tag, value, step)
                else:
                    tb.add_histogram_raw(tag, global_step=step, **value)
            self.tb_queue.clear()

    # --- epoch end: averages and warnings
    def _ratio_warnings(self, ratios: dict[str, float]) -> tuple[list[str], list[str]]:
        """(warnings, notes) on the weights' epoch-mean update ratios (biases start at 0: their
        ratio is meaningless). A low ratio is blamed on the learning rate only when the schedule
        has not annealed it below ANNEALED of its start."""
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
            at = " at the starting lr" if scale < ANNEALED else ""
            warnings.append(f"{_some(low)}{at} (healthy ~1e-3; learning rate too low?)")
        return warnings, notes

    def epoch_end(self, run, record: dict) -> dict:
        self.flush_tb(run)
        extra: dict = {}
        ratios = {n: 10 ** (sum(math.log10(r) for r in rs) / len(rs)) for n, rs in self.epoch_ratios.items() if rs}
        ratios.update({n: 0.0 for n in self.epoch_zero if n not in ratios})
        warnings, notes = self._ratio_warnings({n: r for n, r in ratios.items() if r > 0})
        if ratios:
            extra["update_ratio"] = ratios
        if self.epoch_zero:
            extra["zero_updates"] = dict(self.epoch_zero)  # sampled steps where the tensor did not move
        acts = {path: {k: sum(v) / len(v) for k, v in s.items()} for path, s in self.epoch_acts.items()}
        if acts:
            extra["activations"] = acts
            for path, s in acts.items():
                if s.get("dead", 0) > 0.5:
                    warnings.append(f"{path}: {100 * s['dead']:.0f}% dead ReLUs")
                if s.get("saturated", 0) > 0.5:
                    warnings.append(f"{path}: {100 * s['saturated']:.0f}% saturated units")
        tr, va = record.get("train_accuracy"), record.get("val_accuracy")
        if tr is not None and va is not None:
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
        every hook goes, whatever was queued is written, the pictures show what was recorded."""
        for h in [*self.own, *self.handles]:
            h.remove()
        self.own, self.handles = [], []
        try:
            if getattr(self, "tb_queue", None):
                self.flush_tb(run)
        finally:
            if self.pictures:
                dashboard(run.log.path, run.out / "dashboard.png")
                first = next((l for l in self.graph.layers() if l.tensors), None)
                if first is not None and first.kind == "conv":
                    filters(run.model.get_submodule(first.path).weight.detach().float().cpu(), run.out / "filters.png")


def default_monitors(graph: Graph) -> list:
    return [Monitor(graph)]


# ---------------------------------------------------------------- pictures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def dashboard(metrics, path) -> None:
    """2x2: loss, accuracy (per epoch), update ratios of the weights and activation std (per sample)."""
    plt = _plt()
    rows = []
    with open(metrics) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
    epochs = [r for r in rows if "train_loss" in r]
    samples = [r for r in rows if r.get("monitor") == "step"]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8), dpi=90)
    ep = [r["epoch"] for r in epochs]
    for k in ("train_loss", "val_loss"):
        pts = [(e, r[k]) for e, r in zip(ep, epochs) if r.get(k) is not None]
        if pts:
            ax[0, 0].plot(*zip(*pts), marker="o", ms=3, label=k.replace("_", " "))
    ax[0, 0].set(title="loss", xlabel="epoch", yscale="log")
    for k in ("train_accuracy", "val_accuracy"):
        pts = [(e, r[k]) for e, r in zip(ep, epochs) if r.get(k) is not None]
        if pts:
            ax[0, 1].plot(*zip(*pts), marker="o", ms=3, label=k.replace("_", " "))
    ax[0, 1].set(title="accuracy", xlabel="epoch")
    ratio_rows = [r for r in samples if "update_ratio" in r]
    for n in (ratio_rows[0]["update_ratio"] if ratio_rows else {}):
        if n.rsplit(".", 1)[-1].startswith("weight"):  # recurrent layers have weight_ih_l0, weight_hh_l0, ...
            pts = [(r["step"], r["update_ratio"][n]) for r in ratio_rows if (r["update_ratio"].get(n) or 0) > 0]
            if pts:
                ax[1, 0].plot(*zip(*pts), label=n)
    ax[1, 0].axhline(1e-3, color="gray", ls="--", lw=1, label="1e-3")
    ax[1, 0].set(title="update / weight ratio", xlabel="step", yscale="log")
    act_rows = [r for r in samples if "activations" in r]
    for layer in (act_rows[-1]["activations"] if act_rows else {}):
        pts = [(r["step"], r["activations"][layer]["std"]) for r in act_rows if layer in r["activations"]]
        ax[1, 1].plot(*zip(*pts), label=layer)
    ax[1, 1].set(title="activation std per layer", xlabel="step")
    for a in ax.flat:
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.95, wspace=0.2, hspace=0.3)  # tight_layout: +0.8 s
    fig.savefig(path)
    plt.close(fig)


def filters(w: torch.Tensor, path) -> None:
    """First-layer filters (O, C, k, k) as one mosaic, each filter scaled to [0, 1] on its own;
    RGB when C == 3, else channel 0 in gray."""
    plt = _plt()
    o, c, kh, kw = w.shape
    cols = math.ceil(math.sqrt(o))
    rows = math.ceil(o / cols)
    f = w if c == 3 else w[:, :1]
    lo = f.amin((1, 2, 3), keepdim=True)
    f = (f - lo) / (f.amax((1, 2, 3), keepdim=True) - lo + 1e-12)
    grid = torch.ones(f.shape[1], rows * (kh + 1) + 1, cols * (kw + 1) + 1)  # 1-pixel white borders
    for i in range(o):
        r, q = divmod(i, cols)
        grid[:, 1 + r * (kh + 1):1 + r * (kh + 1) + kh, 1 + q * (kw + 1):1 + q * (kw + 1) + kw] = f[i]
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[1] / grid.shape[2]), dpi=90)
    ax.imshow(grid.permute(1, 2, 0).numpy() if c == 3 else grid[0].numpy(), cmap=None if c == 3 else "gray",
              interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title(f"first-layer filters ({o} x {c} x {kh} x {kw})")
    fig.savefig(path)
    plt.close(fig)
