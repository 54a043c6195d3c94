"""Graph -> torch.nn.Module (SpecNet), with the spec's initialization applied.

Parameter names follow layer names (`conv1.weight`, `res1.conv3.bias`), so checkpoints,
`nnc compile` output and fine-tuning rules all speak the spec's language.
"""

from __future__ import annotations

import torch
from torch import nn

from nnc.compiler.graph import Graph, Info, LayerInfo, ResidualInfo
from nnc.compiler.layers import LAYERS
from nnc.compiler.modules import Residual, SpecNet
from nnc.compiler.vocab import initializers
from nnc.diagnostics import NncError


def _layer(info: LayerInfo, gen: torch.Generator) -> nn.Module:
    m = LAYERS[info.kind].build_torch(info.params, info.input)
    for tensor, dist, _ in info.init:
        initializers.apply(dist, getattr(m, tensor), gen)
    return m


def _node(info: Info, gen: torch.Generator) -> nn.Module:
    if isinstance(info, ResidualInfo):
        body = {n.name: _node(n, gen) for n in info.body}
        proj = tuple(_layer(p, gen) for p in info.proj) if info.proj else (None, None)
        return Residual(body, *proj)
    return _layer(info, gen)


def build_model(graph: Graph, seed: int | None = None) -> SpecNet:
    """A fresh model; `seed` (default: the spec's train seed) makes the initialization repeatable."""
    gen = torch.Generator().manual_seed(graph.spec.train.seed if seed is None else seed)
    try:
        return SpecNet({n.name: _node(n, gen) for n in graph.nodes}, graph.spec.model.name)
    except (MemoryError, RuntimeError) as e:  # torch's "can't allocate memory: you tried to allocate ..."
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise NncError(f"{graph.spec.model.name} does not fit in memory: {graph.n_params:,} parameters need "
                       f"{graph.n_params * 4 / 2**30:,.1f} GiB in float32 before gradients and optimizer state "
                       f"(nnc show lists the parameters per layer)") from None
