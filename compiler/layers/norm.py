"""Normalization layers: lrn, batchnorm, layernorm. Shape: unchanged."""

from __future__ import annotations

from pydantic import Field

from .base import Inferred, LayerDef, Params, Shape, ShapeError, Tensor, Watch


class LRN(Params):
    size: int = Field(5, ge=1)
    alpha: float = Field(1e-4, gt=0)
    beta: float = Field(0.75, gt=0)
    k: float = Field(2.0, gt=0)


def lrn_infer(p: LRN, x: Shape) -> Inferred:
    if x.kind != "image":
        raise ShapeError(f"lrn normalizes across the channels of an image, got {x}")
    # per element: a sum of `size` squares, then the power and the divide
    return Inferred(x, (), x.numel * (p.size + 3))


def lrn_torch(p: LRN, x: Shape):
    from torch import nn

    return nn.LocalResponseNorm(p.size, p.alpha, p.beta, p.k)


def lrn_onnx(e, info, x: str) -> str:
    p: LRN = info.params
    if p.size % 2:  # ONNX's window is centred exactly like torch's only for odd sizes
        return e.op("LRN", [x], info.path, size=p.size, alpha=p.alpha, beta=p.beta, bias=p.k)
    # even size: torch sums channels c - size//2 .. c + (size-1)//2; spell that out
    path = info.path
    sq = e.op("Mul", [x, x], f"{path}.sq")
    sq5 = e.op("Unsqueeze", [sq, e.ints([1], f"{path}.axis1")], f"{path}.sq5")  # (N, 1, C, H, W)
    padded = e.op("Pad", [sq5, e.ints([0, 0, p.size // 2, 0, 0, 0, 0, (p.size - 1) // 2, 0, 0], f"{path}.pads")],
                  f"{path}.padded")
    mean = e.op("AveragePool", [padded], f"{path}.mean", kernel_shape=[p.size, 1, 1])
    mean = e.op("Squeeze", [mean, e.ints([1], f"{path}.axis1b")], f"{path}.mean4")
    from numpy import float32 as one  # here, not at the top: `nnc check` never pays for numpy

    den = e.op("Add", [e.op("Mul", [mean, e.const(one(p.alpha), f"{path}.alpha")], f"{path}.scaled"),
                       e.const(one(p.k), f"{path}.k")], f"{path}.base")
    den = e.op("Pow", [den, e.const(one(p.beta), f"{path}.beta")], f"{path}.den")
    return e.op("Div", [x, den], path)


LRN_DEF = LayerDef(
    "lrn", LRN, lrn_infer, lrn_torch,
    "local response normalization across channels: b = a / (k + alpha/size * sum a^2)^beta "
    "(PyTorch, Caffe and ONNX divide alpha by size; the AlexNet paper does not)",
    prefix="norm", label=lambda name, p: f"{name.upper()}: Normalization layer", transparent=True, onnx=lrn_onnx,
    python=lambda p, x: f"nn.LocalResponseNorm({p.size}, alpha={p.alpha!r}, beta={p.beta!r}, k={p.k!r})")


class BatchNorm(Params):
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, gt=0, lt=1)


def batchnorm_infer(p: BatchNorm, x: Shape) -> Inferred:
    if x.kind not in ("image", "vector"):
        raise ShapeError(f"batchnorm needs an image or a vector, got {x}", help="use layernorm on sequences")
    c = x.features
    return Inferred(x, (Tensor("weight", (c,), "scale"), Tensor("bias", (c,), "shift")), 2 * x.numel)


def batchnorm_torch(p: BatchNorm, x: Shape):
    from torch import nn

    cls = nn.BatchNorm2d if x.kind == "image" else nn.BatchNorm1d
    return cls(x.features, eps=p.eps, momentum=p.momentum)


def batchnorm_onnx(e, info, x: str) -> str:
    p: BatchNorm = info.params
    ins = [e.param(info, n) for n in ("weight", "bias", "running_mean", "running_var")]
    return e.op("BatchNormalization", [x, *ins], info.path, epsilon=p.eps)  # inference mode


def batchnorm_source(p: BatchNorm, x: Shape) -> str:
    cls = "BatchNorm2d" if x.kind == "image" else "BatchNorm1d"
    return f"nn.{cls}({x.features}, eps={p.eps!r}, momentum={p.momentum!r})"


BATCHNORM = LayerDef(
    "batchnorm", BatchNorm, batchnorm_infer, batchnorm_torch,
    "batch normalization per channel (image) or feature (vector), running statistics at eval",
    prefix="bn", label=lambda name, p: f"{name.upper()}: Batch normalization", transparent=True, watch=Watch(),
    onnx=batchnorm_onnx,
    python=batchnorm_source,
    noise=lambda p: "updates its running statistics at every one of the line search's evaluations, so the model "
                    "evaluated later is not the one L-BFGS minimized")


class LayerNorm(Params):
    eps: float = Field(1e-5, gt=0)


def _normalized(x: Shape) -> tuple[int, ...]:
    return x.dims if x.kind == "image" else (x.dims[-1],)


def layernorm_infer(p: LayerNorm, x: Shape) -> Inferred:
    if x.kind == "tokens":
        raise ShapeError("layernorm needs features, got token ids", help="add an embedding first")
    n = _normalized(x)
    return Inferred(x, (Tensor("weight", n, "scale"), Tensor("bias", n, "shift")), 5 * x.numel)


def layernorm_torch(p: LayerNorm, x: Shape):
    from torch import nn

    return nn.LayerNorm(list(_normalized(x)), eps=p.eps)


def layernorm_onnx(e, info, x: str) -> str:
    axis = -len(_normalized(info.input))
    ins = [x, e.param(info, "weight"), e.param(info, "bias")]
    return e.op("LayerNormalization", ins, info.path, axis=axis, epsilon=info.params.eps)


LAYERNORM = LayerDef(
    "layernorm", LayerNorm, layernorm_infer, layernorm_torch,
    "layer normalization over (C, H, W) of an image, or the last axis of a vector or sequence",
    prefix="ln", label=lambda name, p: f"{name.upper()}: Layer normalization", transparent=True, watch=Watch(),
    onnx=layernorm_onnx,
    python=lambda p, x: f"nn.LayerNorm({list(_normalized(x))}, eps={p.eps!r})")

LAYERS = (LRN_DEF, BATCHNORM, LAYERNORM)
