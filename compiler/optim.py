"""What torch.optim lacks: the notes' momentum update, imported by the optimizer registry's
builders only (it imports torch).

The notes write momentum as a velocity in parameter units, v = mu·v − lr·dx; x += v (Nesterov:
x += −mu·v_prev + (1 + mu)·v). torch's SGD keeps the velocity in gradient units, b = mu·b + dx;
x −= lr·b. While lr is constant the two give the same steps; when lr changes (a schedule) they
differ: the notes' velocity carries the steps already taken at the old rate through the change,
torch's rescales its whole velocity at once. The `momentum` and `nesterov` optimizers are the
notes' (this module); `sgd(momentum=...)` is torch's.
"""

from __future__ import annotations

import torch


class NotesMomentum(torch.optim.Optimizer):
    """v = mu·v − lr·(dx + weight_decay·x); x += v, or with `nesterov` x += −mu·v_prev + (1 + mu)·v.
    Per-group `lr`, `mu`, `weight_decay` (the coupled L2 of `regularize l2`)."""

    def __init__(self, params, lr: float, mu: float, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "mu": mu, "nesterov": nesterov, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if g["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=g["weight_decay"])
            vs = [self.state[p].setdefault("velocity", torch.zeros_like(p)) for p in params]
            if g["nesterov"]:
                prev = torch._foreach_mul(vs, g["mu"])  # mu·v_prev
            torch._foreach_mul_(vs, g["mu"])
            torch._foreach_add_(vs, grads, alpha=-g["lr"])  # v = mu·v − lr·dx
            if g["nesterov"]:
                torch._foreach_sub_(params, prev)
                torch._foreach_add_(params, vs, alpha=1 + g["mu"])
            else:
                torch._foreach_add_(params, vs)
        return loss
