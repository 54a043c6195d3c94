"""`nnc doctor`: the notes' sanity checks before a long run, on the spec's real training data.

1. the loss at initialization, regularization off, is what the scores give with labels they
   know nothing about (ln C for softmax and (C-1)·margin for the SVM when the scores are ~0),
   and the scores are small (std <= SCORE_STD_MAX);
2. turning regularization up raises the loss;
3. the model overfits 20 examples (regularization and dropout off) with the spec's optimizer at
   its lr: 100% training accuracy with the loss below half its start (a regression loss: below 1%
   of it); when the spec's optimizer does not get there, Adam at 1e-3 tries, with a note;
4. gradient check: centered differences in float64 vs autograd, per parameter tensor (NaN is
   wrong; nothing comparable above the noise floor is inconclusive);
5. a coarse learning-rate sweep in log space: where the loss (of the first batch, before and
   after the steps) goes down without exploding; it fails when none does, or when the loss
   exploded at or below the spec's own lr.

Every check returns a `Check` with its measured numbers; the CLI prints them and exits 4 when
one failed. Dropout is switched off (p=0) rather than the model put in eval mode, so that
batchnorm still normalizes with batch statistics as it does in training.

Big models on a CPU: each check has a time budget (seconds, `budget`; 0 = none). The checks
that train (overfit, lr sweep) and the gradient check plan their work from one measured
training step and shrink it (fewer examples, smaller batches, fewer steps, fewer entries) to
fit; the check's summary says what was run and what the full check would have cost. A check
that cannot say anything within its budget is skipped (`passed` None), never failed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from nnc.compiler.graph import Graph
from nnc.compiler.modules import Multi
from nnc.compiler.modules import first as primary
from nnc.compiler.torch_module import build_model
from nnc.compiler.vocab.losses import LOSSES, build_loss
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.runtime import param_groups as P
from nnc.runtime import preprocess
from nnc.runtime.data import tensors
from nnc.runtime.divergence import EXPLODE
from nnc.runtime.feeds import training_sample

# the notes' gradient-check thresholds on the relative error |a - n| / (|a| + |n|)
WRONG, UNCOMFORTABLE, HAPPY = 1e-2, 1e-4, 1e-7
# Below this multiple of the finite-difference rounding noise eps * |f| / h, both gradients are
# "zero": the numeric one cannot tell 0 from rounding (a bias right before batchnorm has true
# gradient 0; autograd gives ~1e-17, centered differences a few 1e-11).
NOISE_FLOOR = 100
# Loss at init: a variance-preserving init (He on a ReLU net) maps unit-variance inputs to
# scores of variance ~2 (std 1.4). Scores of std > 2 (twice that variance; in units of the
# margin for the SVM) are "too large at init": softmax grows confident at random (the loss
# is ~ln C + std^2 / 2 nats), the hinges open ((C-1) E[max(0, d + 1)], d ~ N(0, 2 std^2)).
SCORE_STD_MAX = 2.0
DEFAULT_BUDGET = 60.0  # seconds per check


@dataclass
class Check:
    name: str
    passed: bool | None  # None: skipped or inconclusive (time budget), says why in summary
    summary: str  # the measured numbers, one line
    details: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return {True: "pass", False: "fail", None: "skipped"}[self.passed]


@dataclass
class TensorGrad:
    name: str
    entries: int  # how many entries were checked
    worst: float  # the largest relative error among the entries above the noise floor
    verdict: str  # happy / ok / uncomfortable / wrong, or zero (every entry below the floor)
    below_floor: int = 0  # entries where |autograd| and |numeric| were both below the noise floor


def verdict(rel: float) -> str:
    if rel > WRONG:
        return "wrong"
    if rel > UNCOMFORTABLE:
        return "uncomfortable"
    if rel > HAPPY:
        return "ok"  # fine for objectives with kinks (ReLU, max pooling, hinge)
    return "happy"


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout module's p to 0 (in place); train mode is kept for batchnorm."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    return model


def gradient_check(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, h: float = 1e-5,
                   samples: int = 10, seed: int = 0, budget: float = 0.0) -> list[TensorGrad]:
    """Compare autograd with centered differences (f(w+h) - f(w-h)) / 2h in float64 on a copy
    of `model` (dropout off), for up to `samples` random entries of each parameter tensor.

    The notes' relative error |a - n| / (|a| + |n|) is undefined or meaningless where both
    gradients are (near) zero: an entry where |a| and |n| are both below the noise floor
    NOISE_FLOOR * eps * max(|f|, 1) / h agrees (counted in `below_floor`), and a tensor whose
    entries all do gets the verdict "zero". With a `budget` (seconds), fewer entries per tensor
    are checked (at least 1), then fewer tensors, spread over the depth."""
    m = no_dropout(copy.deepcopy(model)).double().train()
    x = x.double() if x.is_floating_point() else x
    y = y.double() if y.is_floating_point() else y
    f = lambda: loss_fn(m(x), y)
    m.zero_grad(set_to_none=True)
    f().backward()
    with torch.no_grad():
        t0 = time.perf_counter()
        f0 = f().item()
        t_forward = time.perf_counter() - t0
    floor = NOISE_FLOOR * torch.finfo(torch.float64).eps * max(abs(f0), 1.0) / h
    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad and p.grad is not None]
    if budget > 0:
        samples = max(1, min(samples, int(budget / (2 * t_forward * max(len(named), 1)))))
        fits = max(2, int(budget / (2 * t_forward * samples)))
        if fits < len(named):  # first and last tensors, and evenly between
            keep = set(np.linspace(0, len(named) - 1, fits).round().astype(int).tolist())
            named = [t for i, t in enumerate(named) if i in keep]
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for name, p in named:
            flat, grad = p.view(-1), p.grad.view(-1)
            idx = torch.randperm(flat.numel(), generator=gen)[:samples] if flat.numel() > samples else torch.arange(flat.numel())
            worst, zero = 0.0, 0
            for i in idx.tolist():
                old = flat[i].item()
                flat[i] = old + h
                fp = f().item()
                flat[i] = old - h
                fm = f().item()
                flat[i] = old
                num, ana = (fp - fm) / (2 * h), grad[i].item()
                if abs(num) < floor and abs(ana) < floor:
                    zero += 1
                    continue
                rel = abs(ana - num) / (abs(num) + abs(ana))
                worst = max(worst, rel if math.isfinite(rel) else math.inf)  # NaN/inf gradients: wrong
            out.append(TensorGrad(name, len(idx), worst, "zero" if zero == len(idx) else verdict(worst), zero))
    return out


# ---------------------------------------------------------------- loss at init


def svm_expected(classes: int, std: float, margin: float = 1.0) -> float:
    """(C-1) E[max(0, d + margin)] for d = s_j - s_y ~ N(0, 2 std^2): the hinge loss of
    independent random scores of std `std` (closed form)."""
    sd = math.sqrt(2) * std
    if sd == 0:
        return (classes - 1) * margin
    z = margin / sd
    cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    pdf = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return (classes - 1) * (margin * cdf + sd * pdf)


def label_free_losses(kind: str, margin: float, scores: torch.Tensor, labels: int = 32,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k) losses of each example's scores for k labels (all C of them, or `labels` drawn at
    random when C is larger), and the loss's slope in s_y there (the active hinges; 1 - p_y
    for softmax): the loss when the labels carry no information. The notes' formulas written
    out, not the registry's loss function (which is what is being checked)."""
    n, c = scores.shape
    if c <= labels:
        y = torch.arange(c).expand(n, c)
    else:
        y = torch.randint(0, c, (n, labels), generator=torch.Generator().manual_seed(seed))
    y = y.to(scores.device)
    sy = scores.gather(1, y)  # (n, k)
    if kind == "svm":  # sum over j != y of max(0, s_j - s_y + margin)
        hinge = (scores[:, None, :] - sy[:, :, None] + margin).clamp_min(0)
        return hinge.sum(2) - margin, (hinge > 0).sum(2) - 1.0
    lse = torch.logsumexp(scores, 1, keepdim=True)  # softmax cross-entropy: -s_y + log sum_j e^s_j
    return lse - sy, 1 - (sy - lse).exp()


def expected_at_init(kind: str, margin: float, scores: torch.Tensor) -> dict:
    """What the loss of these scores should be at init, and how far it may honestly be off.

    `mean`: the loss averaged over random labels (exact for these scores); `slack`: how far
    the real labels may move it. A random net's scores line up with the classes a little by
    chance (digits images are class-structured: ~0.3 score std on the digits MLP); allowing up
    to one score std of such alignment moves the loss by about slope * std (the loss's mean
    slope in s_y: the active hinges, or 1 - p_y), plus 4 standard errors of the label sampling
    (and float32 rounding).
    A loss outside is not this loss of these scores (summed instead of averaged, wrong labels)."""
    n, c = scores.shape
    per, slope = label_free_losses(kind, margin, scores)
    std = scores.var(1).mean().sqrt().item()  # spread of the scores across classes, per example
    slack = (slope.mean().item() * std + 4 * per.var(1, unbiased=False).sum().sqrt().item() / n
             + 1e-5 * abs(per.mean().item()))  # float32 rounding
    if kind == "svm":
        model = f"(C-1)·E[max(0, d+{margin:g})], d ~ N(0, 2·{std:.2f}²) = {svm_expected(c, std, margin):.2f}"
    elif std * std < math.log(c):
        model = f"ln C + std²/2 = {math.log(c) + std * std / 2:.2f}"
    else:
        model = "ln C + std²/2 only for small std"
    mean = per.mean().item()
    return {"mean": mean, "slack": slack, "score_std": std,
            "basis": f"these scores with random labels: {mean:.2f}; independent scores of that std: {model}; "
                     f"allowed: ± {slack:.2f} (scores lined up with the classes by up to one std)"}


# ---------------------------------------------------------------- the doctor


class Doctor:
    """Holds the preprocessed training split and builds fresh models for each check."""

    def __init__(self, graph: Graph, device: str = "cpu", budget: float = DEFAULT_BUDGET, data=None):
        spec = graph.spec
        self.graph, self.dev, self.budget = graph, torch.device(device), budget
        train = training_sample(graph, data)
        self.x, self.y = tensors(train, preprocess.fit_for(spec, train.x), self.dev)
        self.loss_def = LOSSES[spec.loss.kind]
        self.loss_fn = build_loss(graph)
        self.classes = graph.output.features if self.loss_def.classification else None
        self.gen = torch.Generator().manual_seed(spec.train.seed)
        self._cost: tuple[float, float] | None = None  # seconds per step: overhead, per example

    def model(self, dropout: bool = True) -> torch.nn.Module:
        m = build_model(self.graph).to(self.dev).train()
        return m if dropout else no_dropout(m)

    def subset(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self.x), generator=self.gen)[:n].to(self.dev)
        return self.x[idx], self.y[idx]

    # --- time budget
    def step_seconds(self, batch: int) -> float:
        """Seconds of one training step (forward, backward) on `batch` examples: a + c * batch,
        from steps timed on 4 examples and, unless that alone is slow (a big model, where the
        overhead a is nothing), on 32, after a warm-up step on 2 (batchnorm needs 2). The
        global RNG is left as it was, so that the checks' models do not depend on this."""
        if self._cost is None:
            with torch.random.fork_rng(devices=[]):
                model = self.model(dropout=False)

                def timed(b: int) -> float:
                    x, y = self.x[:b], self.y[:b]
                    t0 = time.perf_counter()
                    model.zero_grad(set_to_none=True)
                    self.loss_fn(model(x).float(), y).backward()
                    if self.dev.type == "cuda":
                        torch.cuda.synchronize()
                    return time.perf_counter() - t0

                timed(2)
                b1, b2 = min(4, len(self.x)), min(32, len(self.x))
                t1 = timed(b1)
                if t1 > 0.5 or b2 <= b1:
                    self._cost = (0.0, t1 / b1)
                else:
                    c = max((timed(b2) - t1) / (b2 - b1), 0.0)
                    self._cost = (max(t1 - b1 * c, 0.0), c)
        a, c = self._cost
        return a + c * batch

    def fits(self, seconds: float, per_batch: float = 1.0) -> int:
        """The largest batch whose step, repeated `per_batch` times, takes at most `seconds`."""
        self.step_seconds(0)  # measured once
        a, c = self._cost
        return int((seconds / per_batch - a) / c) if c > 0 else 1 << 30

    def forward_examples(self, n: int) -> int:
        """How many of `n` examples one forward pass (about a third of a step) may hold."""
        if self.budget <= 0:
            return n
        return max(min(n, 32), min(n, self.fits(self.budget / 2 * 3)))

    # --- 1. loss at init
    def init_loss(self, n: int = 512) -> Check:
        x, y = self.subset(self.forward_examples(n))
        with torch.no_grad():
            scores = self.model(dropout=False)(x).float()
            loss = self.loss_fn(scores, y).item()
        if self.loss_def.chance is None or type(scores) is Multi or scores.dim() != 2 or scores.shape[1] < 2:
            return Check("loss at init", math.isfinite(loss), f"{loss:.4f} (no chance value for {self.loss_def.kind})",
                         {"loss": loss})
        kind, params = self.loss_def.kind, self.graph.spec.loss.params
        margin = getattr(params, "margin", 1.0)
        chance = self.loss_def.chance(params, self.classes)
        exp = expected_at_init(kind, margin, scores)
        std, lo, hi = exp["score_std"], exp["mean"] - exp["slack"], exp["mean"] + exp["slack"]
        limit = SCORE_STD_MAX * (margin if kind == "svm" else 1.0)
        what = "(C-1)·margin" if kind == "svm" else "ln C"
        head = f"{loss:.4f} vs chance {chance:.4f} ({what}, C={self.classes})"
        expect = f"scores of std {std:.2f} give {exp['mean']:.2f} ({lo:.2f} .. {hi:.2f})"
        details = {"loss": loss, "chance": chance, "score_std": std, "score_std_limit": limit,
                   "expected": exp["mean"], "expected_low": lo, "expected_high": hi, "basis": exp["basis"]}
        if not math.isfinite(loss):
            return Check("loss at init ≈ chance", False, f"{head}: the loss is not finite", details)
        explained = lo <= loss <= hi
        if explained and std <= limit:
            return Check("loss at init ≈ chance", True, f"{head}; {expect}, std <= {limit:g}", details)
        if explained:
            return Check("loss at init ≈ chance", False,
                         f"{head}: scores too large at init, std {std:.2f} > {limit:g}; the init scale is the "
                         f"cause: {expect}; scale the weights down (e.g. the last layer's)", details)
        return Check("loss at init ≈ chance", False,
                     f"{head}: not what {expect} with random labels; is the loss summed instead of averaged, "
                     "or the class count wrong?", details)

    # --- 2. regularization raises the loss
    def regularization(self, n: int = 512) -> Check:
        x, y = self.subset(self.forward_examples(n))
        model = self.model(dropout=False)
        reg = self.graph.spec.regularize
        l2 = max(reg.l2 * 1e3, 1.0)
        decayed = P.decayed(model, self.graph)
        if not any(mult > 0 for _, mult in decayed):
            return Check("regularization raises the loss", None,
                         "skipped: no weight is decayed (decay_mult 0 on every layer)", {})
        with torch.no_grad():
            data = self.loss_fn(model(x).float(), y).item()
            pen = float(P.penalty(decayed, 0.0, l2))
        total = data + pen
        return Check("regularization raises the loss", total > data * 1.01,
                     f"{data:.4f} without, {total:.4f} with l2={l2:g}", {"loss": data, "with_l2": total, "l2": l2})

    # --- 3. overfit a tiny subset
    def overfit(self, n: int = 20, max_steps: int = 300, lr: float = 1e-3) -> Check:
        boxed = ""
        if self.budget > 0:  # at least 30 steps: fewer examples, down to 5, for a big model
            step = self.step_seconds(n)
            if 30 * step > self.budget:
                n_fit = max(5, self.fits(self.budget, 30))
                if 10 * self.step_seconds(n_fit) > self.budget:
                    return Check(f"overfits {n} examples", None, f"skipped: ~{30 * step:.0f} s for 30 steps of {n} "
                                 f"examples > budget {self.budget:g} s; raise --budget or use a GPU",
                                 {"seconds_per_step": step})
                boxed = f"; time-boxed: {n_fit} examples instead of {n}, {self.budget:g} s"
                n = n_fit
        x, y = self.subset(n)
        n = len(x)  # the split may hold fewer
        spec_opt = self.graph.spec.optimizer
        run = self._fit(x, y, spec_opt.kind, spec_opt.params, max_steps)
        how, note = f"{spec_opt.kind} lr {spec_opt.params.lr:g}", ""
        if run["ok"] is not True and (spec_opt.kind, spec_opt.params.lr) != ("adam", lr):
            # the spec's optimizer may be slow on 20 examples (sgd at lr 0.01) without the model being wrong
            fallback = self._fit(x, y, "adam", OPTIMIZERS["adam"].params(lr=lr), max_steps)
            verdict = (f"adam lr {lr:g} did: the model can fit them, the spec's optimizer is slow on them (its lr?)"
                       if fallback["ok"] else f"nor did adam lr {lr:g}")
            note = (f"; the spec's {how} did not get there (loss {run['first']:.3f} -> {run['loss']:.4f} in "
                    f"{run['step']} steps), {verdict}")
            run, how = fallback, f"adam lr {lr:g}"
        ok, first, loss, acc, step = run["ok"], run["first"], run["loss"], run["acc"], run["step"]
        if run["timed_out"] and not ok:
            boxed += f"; stopped by the {self.budget:g} s budget before it got there (inconclusive)"
        what = f"training accuracy {100 * acc:.0f}%, " if self.classes else ""
        if self.classes and acc == 1.0 and not ok and not run["timed_out"]:
            boxed += "; every example is right but the loss stalls: are the scores squashed (a softmax before the loss)?"
        return Check(f"overfits {n} examples", ok,
                     f"{what}loss {first:.3f} -> {loss:.4f} in {step} steps ({how}){boxed}{note}",
                     {"accuracy": acc, "first_loss": first, "loss": loss, "steps": step, "examples": n,
                      "optimizer": how})

    def _fit(self, x: torch.Tensor, y: torch.Tensor, kind: str, params, max_steps: int) -> dict:
        """Train a fresh model (dropout and regularization off) on (x, y) with optimizer `kind` at a
        constant rate until it fits them: ok True (classes: 100% accuracy and the loss below half its
        start; a regression loss: below 1% of it), False, or None when the time budget ran out first."""
        opt_def = OPTIMIZERS[kind]
        model = self.model(dropout=False)
        opt = opt_def.build(params, [{"params": list(model.parameters()), "lr_mult": 1.0}])
        first = loss = acc = None
        t0, timed_out, step = time.perf_counter(), False, 0
        for step in range(1, max_steps + 1):
            seen = []

            def closure():
                opt.zero_grad(set_to_none=True)
                scores = model(x).float()
                l = self.loss_fn(scores, y)
                l.backward()
                seen.append((scores.detach(), l.item()))
                return l

            if opt_def.full_batch:  # L-BFGS evaluates the closure as often as its line search needs
                opt.step(closure)
            else:
                closure()
                opt.step()
            scores, loss = seen[0]  # at the weights the step started from
            first = loss if first is None else first
            if self.classes:  # (several outputs: the first one's accuracy)
                acc = (primary(scores).argmax(1) == primary(y)).float().mean().item()
                if acc == 1.0 and loss < 0.05:
                    break
            elif loss < 1e-3 * first:
                break
            if self.budget > 0 and time.perf_counter() - t0 > self.budget:
                timed_out = True
                break
        # classes: 100% accuracy *and* the loss below half its start (a softmax before
        # cross_entropy gets every example right while its loss stalls at 1.46 of ln 10 = 2.30)
        ok = acc == 1.0 and loss < 0.5 * first if self.classes else loss < 1e-2 * first
        return {"ok": None if timed_out and not ok else ok, "first": first, "loss": loss, "acc": acc, "step": step,
                "timed_out": timed_out}

    # --- 4. gradient check
    def gradients(self, n: int = 4, samples: int = 10) -> Check:
        x, y = self.subset(n)
        model = self.model(dropout=False)
        numel = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
        t0 = time.perf_counter()
        results = gradient_check(model, self.loss_fn, x, y, samples=samples, budget=self.budget)
        compared = [r for r in results if r.verdict != "zero"]
        worst = max(compared, key=lambda r: r.worst, default=None)
        bad = [r.name for r in results if r.verdict == "wrong"]
        summary = (f"worst relative error {worst.worst:.2e} ({worst.name}, {worst.verdict})" if worst
                   else "every checked entry below the noise floor")
        summary += f" over {len(results)} tensors, {sum(r.entries for r in results)} entries"
        floor = sum(r.below_floor for r in results)
        if floor:
            zero = [r.name for r in results if r.verdict == "zero"]
            hint = " (a bias right before batchnorm?)" if zero and all(z.endswith("bias") for z in zero) else ""
            summary += (f"; {floor} {'entry' if floor == 1 else 'entries'} with both gradients ~0 (below the "
                        "finite-difference noise) count as agreeing"
                        + (f", every checked entry of {', '.join(zero)}{hint}" if zero else ""))
        if len(results) < len(numel) or any(r.entries < min(samples, numel[r.name]) for r in results):
            summary += (f"; time-boxed to {self.budget:g} s: {len(results)} of {len(numel)} tensors, "
                        f"at most {max(r.entries for r in results)} entries each ({time.perf_counter() - t0:.0f} s)")
        if bad:
            summary += f"; wrong: {', '.join(bad)}"
        passed = not bad
        if passed and worst is None:  # nothing was compared: no evidence either way
            passed = None
            summary += " (inconclusive: no entry could be compared)"
        return Check("gradient check", passed, summary, {"tensors": [asdict(r) for r in results]})

    # --- 5. learning-rate sweep
    def sweep_plan(self, lrs: tuple, steps: int, batch: int, full_batch: bool) -> tuple[tuple, int, int, str]:
        """Shrink the sweep to the budget: batch down to 8, then steps down to 20, then every
        other learning rate. Returns (lrs, steps, batch, note)."""
        if self.budget <= 0 or full_batch:
            return lrs, steps, batch, ""
        cost = lambda l, s, b: len(l) * s * self.step_seconds(b)
        full = cost(lrs, steps, batch)
        plan = (lrs, steps, batch)
        if cost(*plan) > self.budget:
            plan = (lrs, steps, max(min(batch, 8), min(batch, self.fits(self.budget, len(lrs) * steps))))
        if cost(*plan) > self.budget:
            plan = (lrs, max(20, int(self.budget / (len(lrs) * self.step_seconds(plan[2])))), plan[2])
        if cost(*plan) > self.budget:
            plan = (lrs[::2], plan[1], plan[2])
        if plan == (lrs, steps, batch):
            return lrs, steps, batch, ""
        return (*plan, f"time-boxed: {len(plan[0])} lrs x {plan[1]} steps of batch {plan[2]} (~{cost(*plan):.0f} s); "
                       f"the full sweep, {len(lrs)} x {steps} of {batch}, ~{full:.0f} s")

    def lr_sweep(self, lrs=tuple(10.0 ** np.arange(-5, 1.01, 0.75)), steps: int = 100, n: int = 512) -> Check:
        spec = self.graph.spec
        opt_def = OPTIMIZERS[spec.optimizer.kind]
        x, y = self.subset(n)
        n = len(x)  # the split may hold fewer than n examples
        lrs, steps, batch, boxed = self.sweep_plan(tuple(lrs), steps, min(spec.train.batch, n), opt_def.full_batch)
        if boxed and len(lrs) * steps * self.step_seconds(batch) > 3 * self.budget:
            return Check(f"lr sweep ({spec.optimizer.kind})", None,
                         f"skipped: even {boxed.split(': ', 1)[1]}; raise --budget or use a GPU", {"rows": []})
        x0, y0 = (x, y) if opt_def.full_batch else (x[:batch], y[:batch])
        cuda = [torch.cuda.current_device()] if self.dev.type == "cuda" else []

        def probe(model) -> float:
            """The loss on the first batch, with the same dropout masks every time."""
            with torch.no_grad(), torch.random.fork_rng(devices=cuda):
                torch.manual_seed(spec.train.seed)
                return self.loss_fn(model(x0).float(), y0).item()

        rows = []
        for lr in lrs:
            torch.manual_seed(spec.train.seed)
            model = self.model()
            first = probe(model)
            p = spec.optimizer.params.model_copy(update={"lr": float(lr)})
            opt = opt_def.build(p, [{"params": list(model.parameters()), "lr_mult": 1.0}])
            losses, exploded = [], False
            for step in range(steps):
                if opt_def.full_batch:
                    xb, yb = x, y
                else:  # consecutive batches, wrapping around the end of the subset
                    idx = (torch.arange(batch, device=self.dev) + step * batch) % n
                    xb, yb = x[idx], y[idx]

                def closure():
                    opt.zero_grad(set_to_none=True)
                    l = self.loss_fn(model(xb).float(), yb)
                    l.backward()
                    closure.loss = l.item()
                    return l

                opt.step(closure) if opt_def.full_batch else (closure(), opt.step())
                losses.append(closure.loss)
                if not math.isfinite(closure.loss) or closure.loss > EXPLODE * losses[0]:
                    exploded = True
                    break
            # down: the same examples (the first batch, same dropout masks) have a lower loss after
            # the steps than before; the batches' own losses differ by their examples, which with
            # a small batch is noise enough to look like progress at any lr
            end = closure.loss if exploded else probe(model)
            down = not exploded and end < 0.9 * first
            status = "exploded" if exploded else ("down" if down else "flat")
            rows.append({"lr": float(lr), "first": first, "end": end, "exploded": exploded, "down": down,
                         "status": status, "steps": len(losses), "train_end": float(np.mean(losses[-10:]))})
        good = [r["lr"] for r in rows if r["down"]]
        best = min((r for r in rows if r["down"]), key=lambda r: r["end"], default=None)
        lr0 = spec.optimizer.params.lr
        if good:
            summary = (f"loss goes down for lr {min(good):.1e} .. {max(good):.1e} (best {best['lr']:.1e}: "
                       f"{best['first']:.3f} -> {best['end']:.3f}); spec lr {lr0:g} is "
                       + ("inside" if min(good) <= lr0 <= max(good) else "OUTSIDE") + " it")
        else:
            summary = f"the loss went down for none of {len(rows)} learning rates ({lrs[0]:.0e} .. {lrs[-1]:.0e})"
        passed = bool(good)
        if boxed:  # a few steps of a small batch finding nothing is no evidence against the lrs
            summary += f"; {boxed}" + ("" if good else " (inconclusive)")
            passed = passed or None
        blown = [r["lr"] for r in rows if r["exploded"]]
        if blown and lr0 >= min(blown) and (not good or lr0 > max(good)):
            # a short sweep exploding at or below the spec's lr is evidence enough: a longer run would too
            summary += f"; the loss exploded from lr {min(blown):.1e} up, and the spec's lr is {lr0:g}: lower it"
            passed = False
        return Check(f"lr sweep ({spec.optimizer.kind}, {steps} steps)", passed, summary,
                     {"rows": rows, "good_range": [min(good), max(good)] if good else None, "spec_lr": lr0,
                      "steps": steps, "batch": batch, "examples": n})


CHECKS = ("init_loss", "regularization", "overfit", "gradients", "lr_sweep")
# the short names of `nnc doctor --checks`
SHORT = {"init": "init_loss", "reg": "regularization", "overfit": "overfit", "grad": "gradients", "lr": "lr_sweep"}


def run_doctor(graph: Graph, device: str = "cpu", checks=CHECKS, budget: float = DEFAULT_BUDGET,
               on_check=None, data=None) -> list[Check]:
    """Run `checks` (method names, in order); `on_check(check)` is called as each completes.
    `data`: arrays handed over in memory (the Python API), in place of the spec's source."""
    from nnc.runtime.device import refuse_if_too_big

    refuse_if_too_big(graph, torch.device(device), "train")  # the checks train: before the data is read
    doc = Doctor(graph, device, budget, data)
    out = []
    for c in checks:
        # each check draws its examples and initial weights as if it ran alone, so that its
        # numbers do not depend on which checks ran before it
        torch.manual_seed(graph.spec.train.seed)
        doc.gen = torch.Generator().manual_seed(graph.spec.train.seed + CHECKS.index(c))
        t0 = time.perf_counter()
        result = getattr(doc, c)()
        result.seconds = time.perf_counter() - t0
        out.append(result)
        if on_check is not None:
            on_check(result)
    return out
