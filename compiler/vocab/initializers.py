"""The initializer registry, with the maths pinned (docs/language.md, "Pinned maths").

`xavier` and `he` are the lecture's formulas, W = randn(fan_in, fan_out) / sqrt(fan) and
/ sqrt(fan / 2), with the fan chosen by `mode` (fan_in by default); Glorot's fan-average
and the uniform variants are separate words. `nnc show` prints the std each one resolves
to for each layer. `auto` (the default) is `he` for a layer followed by a ReLU-family
activation and `xavier` otherwise (each activation's LayerDef says which: `init_before`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

from pydantic import Field, model_validator

from nnc.compiler.vocab.registry import NoParams, Params, Registry

Mode = Literal["fan_in", "fan_out"]


class Gaussian(Params):
    std: float = Field(0.01, gt=0)
    mean: float = 0.0


class Uniform(Params):
    low: float = -0.05
    high: float = 0.05

    @model_validator(mode="after")
    def _order(self):
        if self.low >= self.high:
            raise ValueError(f"uniform needs low < high, got low={self.low}, high={self.high}")
        return self


class Fan(Params):
    mode: Mode = "fan_in"


class Orthogonal(Params):
    gain: float = Field(1.0, gt=0)


class Constant(Params):
    value: float = 0.0


@dataclass(frozen=True)
class Dist:
    """What an initializer resolves to for one tensor: normal(mean, std), uniform(a, b),
    orthogonal(gain) or constant(value)."""

    kind: str
    a: float
    b: float = 0.0

    def __str__(self) -> str:
        return {"normal": f"N({self.b:g}, std {self.a:.4g})", "uniform": f"U({self.a:.4g}, {self.b:.4g})",
                "orthogonal": f"orthogonal, gain {self.a:g}", "constant": f"= {self.a:g}"}[self.kind]


@dataclass(frozen=True)
class InitDef:
    """One initializer word."""

    kind: str
    params: type[Params]
    resolve: Callable[[Params, int, int], Dist]  # (params, fan_in, fan_out) -> Dist
    doc: str


def _fan(p, fan_in, fan_out) -> int:
    return fan_in if p.mode == "fan_in" else fan_out


INITIALIZERS = Registry("initializer", (
    InitDef("auto", NoParams, lambda p, i, o: Dist("normal", math.sqrt(2 / i)),
            "he before ReLU-family activations, xavier otherwise"),
    InitDef("gaussian", Gaussian, lambda p, i, o: Dist("normal", p.std, p.mean), "N(mean, std^2)"),
    InitDef("uniform", Uniform, lambda p, i, o: Dist("uniform", p.low, p.high), "U(low, high)"),
    InitDef("xavier", Fan, lambda p, i, o: Dist("normal", 1 / math.sqrt(_fan(p, i, o))),
            "randn / sqrt(fan): std 1/sqrt(fan) (the lecture's Xavier)"),
    InitDef("glorot", NoParams, lambda p, i, o: Dist("normal", math.sqrt(2 / (i + o))),
            "Glorot's fan average: std sqrt(2 / (fan_in + fan_out))"),
    InitDef("glorot_uniform", NoParams, lambda p, i, o: Dist("uniform", -math.sqrt(6 / (i + o)), math.sqrt(6 / (i + o))),
            "U(+-sqrt(6 / (fan_in + fan_out)))"),
    InitDef("he", Fan, lambda p, i, o: Dist("normal", math.sqrt(2 / _fan(p, i, o))),
            "randn / sqrt(fan / 2): std sqrt(2/fan) (He et al. 2015)"),
    InitDef("kaiming", Fan, lambda p, i, o: Dist("normal", math.sqrt(2 / _fan(p, i, o))), "same as he"),
    InitDef("he_uniform", Fan, lambda p, i, o: Dist("uniform", -math.sqrt(6 / _fan(p, i, o)), math.sqrt(6 / _fan(p, i, o))),
            "U(+-sqrt(6 / fan))"),
    InitDef("orthogonal", Orthogonal, lambda p, i, o: Dist("orthogonal", p.gain), "a (semi-)orthogonal matrix times gain"),
    InitDef("constant", Constant, lambda p, i, o: Dist("constant", p.value), "every entry = value"),
))

# Tensors that no rule touches.
FIXED = {"scale": Dist("constant", 1.0), "shift": Dist("constant", 0.0), "alpha": Dist("constant", 0.25)}


def resolve(kind: str, params: Params, fan_in: int, fan_out: int, auto: str = "xavier") -> Dist:
    """The distribution of one tensor; `auto` is what the `auto` initializer stands for here."""
    if kind == "auto":
        kind, params = auto, Fan()
    return INITIALIZERS[kind].resolve(params, fan_in, fan_out)


def apply(dist: Dist, tensor, generator=None) -> None:
    """Fill a torch tensor in place (under no_grad)."""
    import torch

    with torch.no_grad():
        if dist.kind == "normal":
            tensor.normal_(dist.b, dist.a, generator=generator)
        elif dist.kind == "uniform":
            tensor.uniform_(dist.a, dist.b, generator=generator)
        elif dist.kind == "orthogonal":
            flat = tensor.reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor[None]
            rows, cols = flat.shape
            g = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
            q, r = torch.linalg.qr(g)
            q = q * torch.sign(torch.diagonal(r))  # a uniform draw over orthogonal matrices
            q = q if rows >= cols else q.T
            flat.copy_(dist.a * q.to(tensor.dtype))
        else:
            tensor.fill_(dist.a)
