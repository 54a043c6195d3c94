"""What every layer kind defines, in one record: `LayerDef`.

A layer kind is its parameter model (Pydantic), its shape rule, its tensors (from which
the parameter count and the initializer's fans follow), its FLOPs, its lecture-style
listing line and its PyTorch builder. Builders import torch lazily so that `nnc check`
and `nnc show` never do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from pydantic import BeforeValidator, Field

from nnc.compiler.vocab.registry import NoParams, Params  # noqa: F401 (the layer files' base classes)

# ---------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """A per-example shape (no batch axis). image: (C, H, W); vector: (D,);
    sequence: (T, D); tokens: (T,) of integer ids below `vocab`."""

    kind: str
    dims: tuple[int, ...]
    vocab: int | None = None

    def __str__(self) -> str:  # as the spec writes it
        inner = ", ".join(map(str, self.dims + ((self.vocab,) if self.vocab else ())))
        return f"{self.kind}({inner})"

    @property
    def listing(self) -> str:
        """The lecture's form: [55x55x96] for images (H x W x C), [4096] for vectors."""
        if self.kind == "image":
            c, h, w = self.dims
            return f"{h}x{w}x{c}"
        return "x".join(map(str, self.dims))

    @property
    def numel(self) -> int:
        return math.prod(self.dims)

    @property
    def features(self) -> int:
        """Channels of an image, width of a vector, features per step of a sequence."""
        return self.dims[0] if self.kind == "image" else self.dims[-1]


class ShapeError(Exception):
    """A layer does not fit its input. `field` names the parameter to point at."""

    def __init__(self, message: str, field: str | None = None, help: str | None = None):
        super().__init__(message)
        self.message, self.field, self.help = message, field, help


@dataclass(frozen=True)
class Tensor:
    """A learnable tensor of a layer, named as in the PyTorch module."""

    name: str
    shape: tuple[int, ...]
    role: str  # weight | bias | scale | shift | alpha | embedding
    fan_in: int = 1
    fan_out: int = 1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Inferred:
    """What a layer's shape rule answers: its output shape, tensors, FLOPs and warnings."""

    out: Shape
    tensors: tuple[Tensor, ...] = ()
    flops: int = 0  # forward FLOPs per example, a multiply-add counted as 2
    warnings: tuple[tuple[str | None, str], ...] = ()  # (field, message)


# ---------------------------------------------------------------- parameter types


def _pair(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 1:
        return (v[0], v[0])
    return v


Pair = Annotated[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]], BeforeValidator(_pair)]
PairNonNeg = Annotated[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]], BeforeValidator(_pair)]
Positive = Annotated[int, Field(gt=0)]


# ---------------------------------------------------------------- the record


@dataclass(frozen=True)
class Watch:
    """What the training monitors measure on a layer's output, besides its mean and std."""

    dead: str | None = None  # a rectifier: "<=0" or "==0" marks a unit that does not fire (dead ReLUs)
    bounds: tuple[float, float] | None = None  # a squashing range: within 0.01 of a bound is saturated


@dataclass(frozen=True)
class LayerDef:
    """One layer kind: every fact about it (see the module's docstring)."""

    kind: str
    params: type[Params]
    infer: Callable[[Any, Shape], Inferred]
    build_torch: Callable[[Any, Shape], Any]  # -> torch.nn.Module; imports torch itself
    doc: str  # one line, with the shape formula
    positional: tuple[str, ...] = ()  # fields that may be written without their key
    prefix: str = ""  # auto names: conv1, conv2, ...
    label: Callable[[str, Any], str] | None = None  # lecture listing text; None: not listed
    activation: bool = False  # a nonlinearity: `init bias ... before WORD` may name it
    # `weights auto` for the weighted layer before this activation: "he" (the ReLU family) or "xavier"
    init_before: str | None = None
    # `weights auto` for a layer that applies its own nonlinearity (rnn, lstm, gru: tanh inside)
    init_self: str | None = None
    # normalization or dropout: the activation after it still counts as following the layer before
    transparent: bool = False
    watch: Watch | None = None  # what the monitors record on its output; None: not recorded
    channels_last: bool = False  # training is faster with channels_last memory when the model has one
    filters: bool = False  # its weight is a bank of image filters (filters.png when it is the first layer)
    # ONNX emitter: (emitter, LayerInfo, input value name) -> output value name. The emitter
    # (compiler/onnx_graph.Emitter) owns every onnx import; layer files never import onnx.
    onnx: Callable[[Any, Any, str], str] | None = None
    # standalone PyTorch source (compiler/python_source): (params, input shape) -> the constructor
    # expression, or (constructor, forward lines using {m} for the module and x for the value)
    python: Callable[[Any, Shape], "str | tuple[str, tuple[str, ...]]"] | None = None
    # why the layer makes the training loss differ between two evaluations at the same weights
    # (params -> reason, or None): L-BFGS, which assumes it does not, warns (compiler/checks.py)
    noise: Callable[[Any], str | None] | None = None
    # a merge reads several values: `infer(params, shapes)` takes a tuple of shapes, and it has no
    # module: `expression(params, shapes, names)` is its forward as Python source (torch.cat(...))
    merge: bool = False
    expression: Callable[[Any, tuple, list], str] | None = None
    structural: bool = False  # written as a structure word (concat, add), not as a layer line


def upper_label(text: str) -> Callable[[str, Any], str]:
    return lambda name, p: f"{name.upper()}: {text}"


def conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> tuple[int, float]:
    """Output size of a conv/pool along one axis: floored like PyTorch, and the exact quotient."""
    span = size + 2 * p - d * (k - 1) - 1
    return span // s + 1, span / s + 1


def fit_warning(axis: str, size: int, k: int, s: int, p: int, d: int = 1) -> str | None:
    """The pinned arithmetic (docs/language.md), when the window does not tile the input exactly."""
    floored, exact = conv_out(size, k, s, p, d)
    if floored == exact:
        return None
    keff = d * (k - 1) + 1
    pad = f" + 2*{p}" if p else ""
    dropped = int(round((exact - floored) * s))
    lost = ("only padding falls off the end, no input is lost" if dropped <= p else
            f"the last {dropped - p} row(s)/column(s) of the input are never read")
    return f"({size}{pad} - {keff}) / {s} + 1 = {exact:g} along {axis}: not an integer, floored to {floored}; {lost}"
