"""The layer registry: one `LayerDef` per word, from one file per family of layers."""

from __future__ import annotations

from nnc.compiler.vocab.registry import Registry

from . import activation, conv, dense, merge, norm, recurrent
from .base import Inferred, LayerDef, Shape, ShapeError, Tensor

LAYERS: Registry[LayerDef] = Registry("layer", conv.LAYERS, norm.LAYERS, dense.LAYERS, activation.LAYERS, recurrent.LAYERS,
                                      merge.LAYERS)

# Words of the model block that are not layers (concat and add are also the kinds of the merges
# they write).
STRUCTURE = ("input", "repeat", "residual", "concat", "add", "branch", "from", "output", "if")

__all__ = ["LAYERS", "STRUCTURE", "Inferred", "LayerDef", "Shape", "ShapeError", "Tensor"]
