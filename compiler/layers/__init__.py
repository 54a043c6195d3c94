"""The layer registry: one `LayerDef` per word, from one file per family of layers."""

from __future__ import annotations

from . import activation, conv, dense, norm, recurrent
from .base import Inferred, LayerDef, Shape, ShapeError, Tensor


def _registry(*families: tuple[LayerDef, ...]) -> dict[str, LayerDef]:
    out: dict[str, LayerDef] = {}
    for family in families:
        for d in family:
            if d.kind in out:
                raise RuntimeError(f"layer kind {d.kind!r} is defined twice")
            out[d.kind] = d
    return out


LAYERS = _registry(conv.LAYERS, norm.LAYERS, dense.LAYERS, activation.LAYERS, recurrent.LAYERS)

# Words of the model block that are not layers.
STRUCTURE = ("input", "repeat", "residual")

__all__ = ["LAYERS", "STRUCTURE", "Inferred", "LayerDef", "Shape", "ShapeError", "Tensor"]
