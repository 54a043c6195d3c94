"""The optimizer registry: the word, its parameters, and the torch optimizer it builds.

Update rules are the notes' (vanilla, momentum, Nesterov, Adagrad, RMSProp, Adam), written in
compiler/optim.py (torch.optim's classes import torch._dynamo, ~1.5 s of start-up; L-BFGS stays
torch.optim's); tests/test_optim_sched.py checks them against those formulas and torch.optim.
`sgd` with momentum is torch's form, whose velocity is in gradient units; `momentum` and
`nesterov` are the notes' (compiler/optim.py says how the two differ when the rate changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import Field, model_validator

from nnc.compiler.vocab.registry import Params, Registry


class SGD(Params):
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0, e.g. sgd(lr=0.01, momentum=0.9, nesterov=true)")
        return self


class Momentum(Params):
    lr: float = Field(0.01, gt=0)
    mu: float = Field(0.9, ge=0, lt=1)


class Adagrad(Params):
    lr: float = Field(0.01, gt=0)
    eps: float = Field(1e-8, gt=0)


class RMSprop(Params):
    lr: float = Field(1e-3, gt=0)
    decay: float = Field(0.99, gt=0, lt=1)
    eps: float = Field(1e-8, gt=0)


class Adam(Params):
    lr: float = Field(1e-3, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


class AdamW(Adam):
    weight_decay: float = Field(0.01, ge=0)  # decoupled; not the notes' L2 (see `regularize l2`)


class LBFGS(Params):
    lr: float = Field(1.0, gt=0)
    history: int = Field(100, ge=1)
    max_iter: int = Field(20, ge=1)


@dataclass(frozen=True)
class OptimizerDef:
    """One optimizer word."""

    kind: str
    params: type[Params]
    build: Callable[[Any, list[dict]], Any]  # (params, torch param groups) -> a torch.optim.Optimizer
    doc: str
    full_batch: bool = False
    # how many parameter-sized tensors it keeps (momentum, Adam's two moments, L-BFGS's history):
    # the memory estimate (compiler/footprint.py)
    state_copies: Callable[[Any], int] = lambda p: 0


def _sgd(p, groups):
    from nnc.compiler import optim
    return optim.SGD(groups, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov)


def _momentum(nesterov: bool):
    def build(p, groups):  # the notes' form, not torch's SGD: they differ when the rate changes (compiler/optim.py)
        from nnc.compiler.optim import NotesMomentum
        return NotesMomentum(groups, lr=p.lr, mu=p.mu, nesterov=nesterov)
    return build


def _adagrad(p, groups):
    from nnc.compiler import optim
    return optim.Adagrad(groups, lr=p.lr, eps=p.eps)


def _rmsprop(p, groups):
    from nnc.compiler import optim
    return optim.RMSprop(groups, lr=p.lr, alpha=p.decay, eps=p.eps)


def _adam(p, groups):
    from nnc.compiler import optim
    return optim.Adam(groups, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps)


def _adamw(p, groups):
    from nnc.compiler import optim
    return optim.Adam(groups, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps, weight_decay=p.weight_decay, decoupled=True)


def _lbfgs(p, groups):
    import torch
    return torch.optim.LBFGS(groups, lr=p.lr, history_size=p.history, max_iter=p.max_iter, line_search_fn="strong_wolfe")


OPTIMIZERS = Registry("optimizer", (
    OptimizerDef("sgd", SGD, _sgd, "x += -lr * dx; with momentum torch's form: b = momentum*b + dx; x += -lr*b",
                 state_copies=lambda p: 1 if p.momentum else 0),
    OptimizerDef("momentum", Momentum, _momentum(False), "v = mu*v - lr*dx; x += v", state_copies=lambda p: 1),
    OptimizerDef("nesterov", Momentum, _momentum(True), "x += -mu*v_prev + (1 + mu)*v", state_copies=lambda p: 1),
    OptimizerDef("adagrad", Adagrad, _adagrad, "cache += dx^2; x += -lr*dx/(sqrt(cache) + eps)",
                 state_copies=lambda p: 1),
    OptimizerDef("rmsprop", RMSprop, _rmsprop, "cache = decay*cache + (1-decay)*dx^2; x += -lr*dx/(sqrt(cache) + eps)",
                 state_copies=lambda p: 1),
    OptimizerDef("adam", Adam, _adam, "Adam with bias correction (Kingma & Ba, Algorithm 1)", state_copies=lambda p: 2),
    OptimizerDef("adamw", AdamW, _adamw, "Adam with decoupled weight decay", state_copies=lambda p: 2),
    # two vectors per remembered step, the direction, the previous gradient and the flat gradient
    OptimizerDef("lbfgs", LBFGS, _lbfgs, "L-BFGS on the full training set (strong Wolfe line search)", full_batch=True,
                 state_copies=lambda p: 2 * p.history + 3),
))
