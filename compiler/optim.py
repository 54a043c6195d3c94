"""nnc's update rules on torch's foreach ops, without torch.optim's dynamo machinery; imported by
the optimizer registry's builders only (it imports torch).

Why not torch.optim's classes: in torch 2.13 a torch.optim.Optimizer imports torch._dynamo (and
sympy with it) at its first add_param_group, zero_grad, state_dict and load_state_dict, and
every Adam/SGD/... step() does so too: ~1.5 s of every `nnc train`'s start-up
(docs/benchmarks.md). `Foreach` subclasses torch.optim.Optimizer (param_groups, state, step
hooks, isinstance) but takes those four methods without their `torch._disable_dynamo` wrapper,
which only matters to code that torch.compile traces; each rule's step() does the arithmetic of
torch's own (single-tensor) implementation in the same order, as foreach ops, so the numbers are
torch's to the bit and the state dicts the same (a checkpoint written with torch.optim resumes
here, and the other way round). tests/test_optim_sched.py holds both to the notes' formulas and
to torch.optim.

`momentum` and `nesterov` are the notes' update (`NotesMomentum`): the notes write momentum as a
velocity in parameter units, v = mu·v − lr·dx; x += v (Nesterov: x += −mu·v_prev + (1 + mu)·v).
torch's SGD (`sgd(momentum=...)`, `SGD` here) keeps the velocity in gradient units, b = mu·b + dx;
x −= lr·b. While lr is constant the two give the same steps; when lr changes (a schedule) they
differ: the notes' velocity carries the steps already taken at the old rate through the change,
torch's rescales its whole velocity at once.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


def _plain(name: str):
    """Optimizer.NAME without the wrapper that imports torch._dynamo on its first call."""
    method = getattr(Optimizer, name)
    return getattr(method, "__wrapped__", method)


class Foreach(Optimizer):
    add_param_group = _plain("add_param_group")
    zero_grad = _plain("zero_grad")
    state_dict = _plain("state_dict")
    load_state_dict = _plain("load_state_dict")

    def _with_grads(self, group: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params = [p for p in group["params"] if p.grad is not None]
        return params, [p.grad for p in params]

    def _state(self, params: list[torch.Tensor], key: str, init) -> list[torch.Tensor]:
        """State `key` of each parameter, created by `init(p)` at its first step."""
        out = []
        for p in params:
            st = self.state[p]
            if key not in st:
                st[key] = init(p)
            out.append(st[key])
        return out

    def _count(self, params: list[torch.Tensor]) -> list[float]:
        """Each parameter's step count, advanced by one (a float32 tensor, as torch.optim keeps it)."""
        steps = self._state(params, "step", lambda p: torch.tensor(0.0, dtype=torch.float32))
        torch._foreach_add_(steps, 1.0)
        return [s.item() for s in steps]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = self._with_grads(group)
            if params:
                self.update(group, params, grads)
        return loss

    def update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError


def _zeros(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _decayed(group: dict, params, grads):
    """The notes' L2 as the gradient's extra term l2 * w (coupled weight decay)."""
    return torch._foreach_add(grads, params, alpha=group["weight_decay"]) if group["weight_decay"] else grads


class SGD(Foreach):
    """x += -lr * dx; with momentum torch's form: b = momentum * b + dx; x += -lr * b (Nesterov:
    x += -lr * (dx + momentum * b)). State `momentum_buffer`, as torch.optim.SGD's."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay})

    def update(self, group, params, grads):
        grads = _decayed(group, params, grads)
        mu = group["momentum"]
        if mu:
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            old = [i for i, b in enumerate(bufs) if b is not None]
            if old:
                torch._foreach_mul_([bufs[i] for i in old], mu)
                torch._foreach_add_([bufs[i] for i in old], [grads[i] for i in old])
            for i, p in enumerate(params):
                if bufs[i] is None:  # the first step: the buffer is the gradient
                    bufs[i] = self.state[p]["momentum_buffer"] = grads[i].detach().clone()
            grads = torch._foreach_add(grads, bufs, alpha=mu) if group["nesterov"] else bufs
        torch._foreach_add_(params, grads, alpha=-group["lr"])


class Adagrad(Foreach):
    """cache += dx^2; x += -lr * dx / (sqrt(cache) + eps). State `step`, `sum`."""

    def __init__(self, params, lr: float, eps: float = 1e-10, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay, "lr_decay": 0.0,
                                  "initial_accumulator_value": 0.0})

    def update(self, group, params, grads):
        steps = self._count(params)
        grads = _decayed(group, params, grads)
        sums = self._state(params, "sum", _zeros)
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        std = torch._foreach_sqrt(sums)
        torch._foreach_add_(std, group["eps"])
        clr = [group["lr"] / (1 + (t - 1) * group["lr_decay"]) for t in steps]
        torch._foreach_addcdiv_(params, grads, std, [-c for c in clr])


class RMSprop(Foreach):
    """cache = decay * cache + (1 - decay) * dx^2; x += -lr * dx / (sqrt(cache) + eps).
    State `step`, `square_avg`; the decay is torch's `alpha`."""

    def __init__(self, params, lr: float, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                                  "momentum": 0.0, "centered": False})

    def update(self, group, params, grads):
        self._count(params)
        grads = _decayed(group, params, grads)
        avgs = self._state(params, "square_avg", _zeros)
        torch._foreach_mul_(avgs, group["alpha"])
        torch._foreach_addcmul_(avgs, grads, grads, value=1 - group["alpha"])
        denom = torch._foreach_sqrt(avgs)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])


class Adam(Foreach):
    """Adam with bias correction (Kingma & Ba, Algorithm 1); `decoupled`: AdamW's weight decay
    (x *= 1 - lr * weight_decay before the step) in place of the notes' coupled L2. State
    `step`, `exp_avg`, `exp_avg_sq`, as torch.optim.Adam's."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "decoupled_weight_decay": decoupled, "amsgrad": False})

    def update(self, group, params, grads):
        steps = self._count(params)
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if wd and group["decoupled_weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * wd)
        elif wd:
            grads = torch._foreach_add(grads, params, alpha=wd)
        m = self._state(params, "exp_avg", _zeros)
        v = self._state(params, "exp_avg_sq", _zeros)
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, [(1 - beta2 ** t) ** 0.5 for t in steps])
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, m, denom, [-(lr / (1 - beta1 ** t)) for t in steps])


class NotesMomentum(Foreach):
    """v = mu·v − lr·(dx + weight_decay·x); x += v, or with `nesterov` x += −mu·v_prev + (1 + mu)·v.
    Per-group `lr`, `mu`, `weight_decay` (the coupled L2 of `regularize l2`). State `velocity`."""

    def __init__(self, params, lr: float, mu: float, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "mu": mu, "nesterov": nesterov, "weight_decay": weight_decay})

    def update(self, group, params, grads):
        grads = _decayed(group, params, grads)
        vs = self._state(params, "velocity", _zeros)
        if group["nesterov"]:
            prev = torch._foreach_mul(vs, group["mu"])  # mu·v_prev
        torch._foreach_mul_(vs, group["mu"])
        torch._foreach_add_(vs, grads, alpha=-group["lr"])  # v = mu·v − lr·dx
        if group["nesterov"]:
            torch._foreach_sub_(params, prev)
            torch._foreach_add_(params, vs, alpha=1 + group["mu"])
        else:
            torch._foreach_add_(params, vs)
