"""Normalization layers: lrn, batchnorm, layernorm. Shape: unchanged."""

from __future__ import annotations

from pydantic import Field

from .base import Inferred, LayerDef, Params, Shape, ShapeError, Tensor


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


LRN_DEF = LayerDef(
    "lrn", LRN, lrn_infer, lrn_torch,
    "local response normalization across channels: b = a / (k + alpha/size * sum a^2)^beta "
    "(PyTorch, Caffe and ONNX divide alpha by size; the AlexNet paper does not)",
    prefix="norm", label=lambda name, p: f"{name.upper()}: Normalization layer")


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


BATCHNORM = LayerDef(
    "batchnorm", BatchNorm, batchnorm_infer, batchnorm_torch,
    "batch normalization per channel (image) or feature (vector), running statistics at eval",
    prefix="bn", label=lambda name, p: f"{name.upper()}: Batch normalization")


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


LAYERNORM = LayerDef(
    "layernorm", LayerNorm, layernorm_infer, layernorm_torch,
    "layer normalization over (C, H, W) of an image, or the last axis of a vector or sequence",
    prefix="ln", label=lambda name, p: f"{name.upper()}: Layer normalization")

LAYERS = (LRN_DEF, BATCHNORM, LAYERNORM)
