"""Fully connected, flatten, dropout and embedding layers."""

from __future__ import annotations

from pydantic import Field

from .base import Inferred, LayerDef, NoParams, Params, Positive, Shape, ShapeError, Tensor, Watch


class Dense(Params):
    units: Positive
    bias: bool = True


def dense_infer(p: Dense, x: Shape) -> Inferred:
    if x.kind == "sequence":
        raise ShapeError(f"dense after an unflattened sequence {x}",
                         help="add `flatten`, or end the recurrent layer with `return last`")
    if x.kind == "tokens":
        raise ShapeError("dense cannot read token ids", help="add an embedding first")
    if x.kind != "vector":
        raise ShapeError(f"dense needs a vector, got {x}")  # images are flattened before this rule
    d = x.dims[0]
    tensors = [Tensor("weight", (p.units, d), "weight", d, p.units)]
    if p.bias:
        tensors.append(Tensor("bias", (p.units,), "bias", d, p.units))
    return Inferred(Shape("vector", (p.units,)), tuple(tensors), 2 * d * p.units)


def dense_torch(p: Dense, x: Shape):
    from torch import nn

    return nn.Linear(x.dims[0], p.units, p.bias)


def dense_onnx(e, info, x: str) -> str:
    ins = [x, e.param(info, "weight")] + ([e.param(info, "bias")] if info.params.bias else [])
    return e.op("Gemm", ins, info.path, transB=1)


DENSE = LayerDef("dense", Dense, dense_infer, dense_torch,
                 "fully connected: (D) -> (units); an image input is flattened first (C*H*W, channel-major)",
                 positional=("units",), prefix="fc", label=lambda name, p: f"{name.upper()}: {p.units} neurons",
                 watch=Watch(), onnx=dense_onnx, python=lambda p, x: f"nn.Linear({x.dims[0]}, {p.units}" + ("" if p.bias else ", bias=False") + ")")



def flatten_infer(p: NoParams, x: Shape) -> Inferred:
    if x.kind == "tokens":
        raise ShapeError("flatten cannot read token ids", help="add an embedding first")
    return Inferred(Shape("vector", (x.numel,)))


def flatten_torch(p: NoParams, x: Shape):
    from torch import nn

    return nn.Flatten()


FLATTEN = LayerDef("flatten", NoParams, flatten_infer, flatten_torch,
                   "flatten: (C, H, W) or (T, D) -> (C*H*W) or (T*D), channel-major", prefix="flatten",
                   onnx=lambda e, info, x: e.op("Flatten", [x], info.path, axis=1),
                   python=lambda p, x: "nn.Flatten()")


class Dropout(Params):
    p: float = Field(0.5, ge=0, lt=1)


def dropout_torch(p: Dropout, x: Shape):
    from torch import nn

    return nn.Dropout(p.p)


def dropout_infer(p: Dropout, x: Shape) -> Inferred:
    if x.kind == "tokens":
        raise ShapeError("dropout cannot read token ids", help="add an embedding first")
    return Inferred(x)


DROPOUT = LayerDef("dropout", Dropout, dropout_infer, dropout_torch,
                   "inverted dropout: zeroes a fraction p while training and scales the rest by 1/(1-p); "
                   "the identity at evaluation", positional=("p",), prefix="drop", transparent=True,
                   onnx=lambda e, info, x: x,  # training only: never in an exported graph
                   python=lambda p, x: f"nn.Dropout({p.p!r})",
                   noise=lambda p: "draws a new mask at every evaluation" if p.p > 0 else None)


class Embedding(Params):
    dim: Positive


def embedding_infer(p: Embedding, x: Shape) -> Inferred:
    if x.kind != "tokens":
        raise ShapeError(f"embedding reads token ids, got {x}", help="declare `input tokens(T, vocabulary)`")
    return Inferred(Shape("sequence", (x.dims[0], p.dim)), (Tensor("weight", (x.vocab, p.dim), "embedding", 1, p.dim),))


def embedding_torch(p: Embedding, x: Shape):
    from torch import nn

    return nn.Embedding(x.vocab, p.dim)


def embedding_onnx(e, info, x: str) -> str:
    return e.op("Gather", [e.param(info, "weight"), x], info.path, axis=0)


EMBEDDING = LayerDef("embedding", Embedding, embedding_infer, embedding_torch,
                     "embedding: (T) token ids below the vocabulary -> (T, dim)",
                     positional=("dim",), prefix="embed",
                     label=lambda name, p: f"{name.upper()}: {p.dim}-d embedding",
                     onnx=embedding_onnx, python=lambda p, x: f"nn.Embedding({x.vocab}, {p.dim})")

LAYERS = (DENSE, FLATTEN, DROPOUT, EMBEDDING)
