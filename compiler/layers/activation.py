"""Nonlinearities. Shape: unchanged, except maxout, which divides the features by `pieces`."""

from __future__ import annotations

import math

from pydantic import Field

from .base import Inferred, LayerDef, NoParams, Params, Shape, ShapeError, Tensor, Watch


class Slope(Params):
    alpha: float = Field(0.01, gt=0)


class Elu(Params):
    alpha: float = Field(1.0, gt=0)


class Maxout(Params):
    pieces: int = Field(2, ge=2)


def _numeric(x: Shape, kind: str) -> None:
    if x.kind == "tokens":
        raise ShapeError(f"{kind} cannot read token ids", help="add an embedding first")


def _same(cost: int, kind: str | None = None):
    def infer(p, x: Shape) -> Inferred:
        if kind:
            _numeric(x, kind)
        return Inferred(x, (), cost * x.numel)
    return infer


# what the monitors record on each family's output
RECTIFIER = Watch(dead="==0")  # a unit whose output is exactly 0 for every example has no gradient
SQUASH_TANH, SQUASH_SIGMOID = Watch(bounds=(-1.0, 1.0)), Watch(bounds=(0.0, 1.0))


def _simple(kind: str, cost: int, doc: str, build, onnx, python, **facts):
    def infer(p, x: Shape) -> Inferred:
        _numeric(x, kind)
        return _same(cost)(p, x)
    # auto names count after the kind: relu1, ...; after a kind that ends in a digit, with a _: relu6_1
    facts.setdefault("prefix", kind + "_" if kind[-1].isdigit() else kind)
    return LayerDef(kind, NoParams, infer, build, doc, activation=True, onnx=onnx, python=python, **facts)


def _unary(op: str, **attrs):
    return lambda e, info, x: e.op(op, [x], info.path, **attrs)


def _softmax_axis(x: Shape) -> int:
    return 1 if x.kind in ("image", "vector") else -1


def _softmax_onnx(e, info, x: str) -> str:
    return e.op("Softmax", [x], info.path, axis=_softmax_axis(info.input))


def _prelu_onnx(e, info, x: str) -> str:
    slope = e.tensor(info, "weight")
    if info.input.kind == "image":
        slope = slope.reshape(-1, 1, 1)  # (C, 1, 1) broadcasts over (N, C, H, W)
    return e.op("PRelu", [x, e.param(info, "weight", slope)], info.path)


def _maxout_onnx(e, info, x: str) -> str:
    p: Maxout = info.params
    shape = info.input
    axis = 1 if shape.kind in ("image", "vector") else len(shape.dims)  # the features, batch axis counted
    dims = [0, *shape.dims]  # 0: keep the (dynamic) batch size
    split = dims[:axis] + [dims[axis] // p.pieces, p.pieces] + dims[axis + 1:]
    grouped = e.op("Reshape", [x, e.ints(split, f"{info.path}.shape")], f"{info.path}.groups")
    return e.reduce_max(grouped, axis + 1, info.path)


def _maxout_source(p: Maxout, x: Shape) -> str:
    return f"Maxout({p.pieces}, dim={_softmax_axis(x)})"


def _relu(p, x):
    from torch import nn
    return nn.ReLU()


def _relu6(p, x):
    from torch import nn
    return nn.ReLU6()


def _relu6_onnx(e, info, x: str) -> str:
    from numpy import float32

    return e.op("Clip", [x, e.const(float32(0), f"{info.path}.min"), e.const(float32(6), f"{info.path}.max")], info.path)


def _tanh(p, x):
    from torch import nn
    return nn.Tanh()


def _sigmoid(p, x):
    from torch import nn
    return nn.Sigmoid()


def _softmax(p, x):
    from torch import nn
    return nn.Softmax(dim=1 if x.kind in ("image", "vector") else -1)


def _leaky(p: Slope, x):
    from torch import nn
    return nn.LeakyReLU(p.alpha)


def _elu(p: Elu, x):
    from torch import nn
    return nn.ELU(p.alpha)


def prelu_infer(p, x: Shape) -> Inferred:
    _numeric(x, "prelu")
    if x.kind == "sequence":  # caught here, so that `nnc check` says it, not the torch builder
        raise ShapeError("prelu on a sequence is not supported", help="use leaky_relu or relu")
    return Inferred(x, (Tensor("weight", (x.features,), "alpha"),), x.numel)


def _prelu(p, x: Shape):
    from torch import nn
    if x.kind == "sequence":
        raise ShapeError("prelu on a sequence is not supported", help="use leaky_relu or relu")
    return nn.PReLU(x.features, init=0.25)


def maxout_infer(p: Maxout, x: Shape) -> Inferred:
    _numeric(x, "maxout")
    f = x.features
    if f % p.pieces:
        raise ShapeError(f"maxout with {p.pieces} pieces needs features divisible by {p.pieces}, got {f}", "pieces")
    dims = (f // p.pieces,) + x.dims[1:] if x.kind == "image" else x.dims[:-1] + (f // p.pieces,)
    return Inferred(Shape(x.kind, dims), (), x.numel)


def _maxout(p: Maxout, x: Shape):
    from nnc.compiler.modules import Maxout as M
    return M(p.pieces, 1 if x.kind in ("image", "vector") else -1)


RELU = _simple("relu", 1, "max(0, x)", _relu, _unary("Relu"), lambda p, x: "nn.ReLU()",
               init_before="he", watch=Watch(dead="<=0"))
RELU6 = _simple("relu6", 2, "min(max(0, x), 6) (MobileNet)", _relu6, _relu6_onnx, lambda p, x: "nn.ReLU6()",
                init_before="he", watch=Watch(dead="<=0"))
TANH = _simple("tanh", 4, "tanh(x), in (-1, 1)", _tanh, _unary("Tanh"), lambda p, x: "nn.Tanh()",
               init_before="xavier", watch=SQUASH_TANH)
SIGMOID = _simple("sigmoid", 4, "1 / (1 + e^-x), in (0, 1)", _sigmoid, _unary("Sigmoid"), lambda p, x: "nn.Sigmoid()",
                  init_before="xavier", watch=SQUASH_SIGMOID)
SOFTMAX = _simple("softmax", 3, "softmax over the features (channels of an image)", _softmax, _softmax_onnx,
                  lambda p, x: f"nn.Softmax(dim={_softmax_axis(x)})")
LEAKY_RELU = LayerDef("leaky_relu", Slope, _same(2, "leaky_relu"), _leaky, "max(alpha*x, x)",
                      positional=("alpha",), prefix="leaky_relu", activation=True, init_before="he", watch=RECTIFIER,
                      onnx=lambda e, info, x: e.op("LeakyRelu", [x], info.path, alpha=info.params.alpha),
                      python=lambda p, x: f"nn.LeakyReLU({p.alpha!r})")
ELU = LayerDef("elu", Elu, _same(4, "elu"), _elu, "x if x > 0 else alpha*(e^x - 1)",
               positional=("alpha",), prefix="elu", activation=True, init_before="he", watch=RECTIFIER,
               onnx=lambda e, info, x: e.op("Elu", [x], info.path, alpha=info.params.alpha),
               python=lambda p, x: f"nn.ELU({p.alpha!r})")
PRELU = LayerDef("prelu", NoParams, prelu_infer, _prelu,
                 "max(a*x, x) with a learned slope a per channel (image) or feature (vector), initially 0.25",
                 prefix="prelu", activation=True, init_before="he", watch=RECTIFIER, onnx=_prelu_onnx,
                 python=lambda p, x: f"nn.PReLU({x.features}, init=0.25)")
MAXOUT = LayerDef("maxout", Maxout, maxout_infer, _maxout,
                  "max over groups of `pieces` consecutive channels/features: F -> F / pieces",
                  positional=("pieces",), prefix="maxout", activation=True, init_before="he", watch=Watch(), onnx=_maxout_onnx,
                  python=_maxout_source)



def _gelu(p, x):
    from torch import nn
    return nn.GELU()  # the exact form, with erf (not the tanh approximation)


def _gelu_onnx(e, info, x: str) -> str:
    """0.5 x (1 + erf(x / sqrt 2)): opset 17 has Erf; the Gelu op itself is opset 20."""
    from numpy import float32  # here, not at the top: `nnc check` never pays for numpy

    p = info.path
    erf = e.op("Erf", [e.op("Mul", [x, e.const(float32(1 / math.sqrt(2)), f"{p}.rsqrt2")], f"{p}.scaled")], f"{p}.erf")
    half_x = e.op("Mul", [x, e.const(float32(0.5), f"{p}.half")], f"{p}.half_x")
    return e.op("Mul", [half_x, e.op("Add", [erf, e.const(float32(1), f"{p}.one")], f"{p}.erf1")], p)


def _silu(p, x):
    from torch import nn
    return nn.SiLU()


def _silu_onnx(e, info, x: str) -> str:
    return e.op("Mul", [x, e.op("Sigmoid", [x], f"{info.path}.gate")], info.path)


# smooth ReLUs: He initialization suits them as it suits ReLU; their outputs are rarely exactly 0
GELU = _simple("gelu", 8, "x * Phi(x), Phi the standard normal CDF (exact, with erf)", _gelu, _gelu_onnx,
               lambda p, x: "nn.GELU()", init_before="he", watch=Watch())
SILU = _simple("silu", 5, "x * sigmoid(x) (swish)", _silu, _silu_onnx, lambda p, x: "nn.SiLU()",
               init_before="he", watch=Watch())

LAYERS = (RELU, RELU6, LEAKY_RELU, PRELU, ELU, GELU, SILU, MAXOUT, TANH, SIGMOID, SOFTMAX)
