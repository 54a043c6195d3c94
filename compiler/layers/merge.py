"""Merges of several values (`concat`, `add`) and `identity`, the layer that passes its input on
(an unchanged branch: DenseNet's and a residual's skip).

`concat` joins along the channels of images (the features of vectors and of a sequence's steps):
the other axes must agree. `add` sums values of one shape. A merge has no module: its forward is
an expression (torch.cat / +), its ONNX node Concat / Add.
"""

from __future__ import annotations

from .base import Inferred, LayerDef, NoParams, Shape, ShapeError


def _axis(x: Shape) -> int:
    """The joined axis, batch axis counted: channels of an image, features otherwise."""
    return 1 if x.kind in ("image", "vector") else len(x.dims)


def _kinds(xs: tuple[Shape, ...], what: str) -> None:
    if any(x.kind == "tokens" for x in xs):
        raise ShapeError(f"{what} cannot read token ids", help="add an embedding first")
    if len({x.kind for x in xs}) > 1:
        raise ShapeError(f"{what} reads values of one kind, got {' and '.join(map(str, xs))}",
                         help="flatten or pool the image first (global_avgpool) to join it with a vector")


def concat_infer(p: NoParams, xs: tuple[Shape, ...]) -> Inferred:
    _kinds(xs, "concat")
    first = xs[0]
    rest = (lambda x: x.dims[1:]) if first.kind == "image" else (lambda x: x.dims[:-1])
    for x in xs[1:]:
        if rest(x) != rest(first):
            what = "spatial sizes" if first.kind == "image" else "steps"
            raise ShapeError(f"concat needs equal {what}: {first} and {x}",
                             help="resize one of them (upsample, pooling, a strided or padded conv) to the other")
    feats = sum(x.features for x in xs)
    dims = (feats, *first.dims[1:]) if first.kind == "image" else (*first.dims[:-1], feats)
    return Inferred(Shape(first.kind, dims))


def add_infer(p: NoParams, xs: tuple[Shape, ...]) -> Inferred:
    _kinds(xs, "add")
    for x in xs[1:]:
        if x != xs[0]:
            raise ShapeError(f"add needs equal shapes: {xs[0]} and {x}",
                             help="project the wider one (a 1x1 conv), or `residual project { ... }` for a shortcut")
    return Inferred(xs[0], (), (len(xs) - 1) * xs[0].numel)


def _concat_onnx(e, info, xs: list[str]) -> str:
    return e.op("Concat", xs, info.path, axis=_axis(info.input))


def _add_onnx(e, info, xs: list[str]) -> str:
    y = xs[0]
    for i, x in enumerate(xs[1:], 1):
        y = e.op("Add", [y, x], info.path if i == len(xs) - 1 else f"{info.path}.{i}")
    return y


CONCAT = LayerDef("concat", NoParams, concat_infer, None, "joins values along channels (images) or features",
                  prefix="cat", onnx=_concat_onnx, merge=True, structural=True, transparent=True,
                  expression=lambda p, xs, names: f"torch.cat([{', '.join(names)}], {_axis(xs[0])})")
ADD = LayerDef("add", NoParams, add_infer, None, "sums values of one shape", prefix="add", onnx=_add_onnx,
               merge=True, structural=True, transparent=True, expression=lambda p, xs, names: " + ".join(names))


def _identity(p, x):
    from torch import nn

    return nn.Identity()


IDENTITY = LayerDef("identity", NoParams, lambda p, x: Inferred(x), _identity, "passes its input on unchanged",
                    prefix="id", transparent=True, onnx=lambda e, info, x: e.op("Identity", [x], info.path),
                    python=lambda p, x: "nn.Identity()")

LAYERS = (IDENTITY, CONCAT, ADD)
