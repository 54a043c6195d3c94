"""Graph -> torch.nn.Module (SpecNet), with the spec's initialization applied.

Parameter names follow layer paths (`conv1.weight`, `res1.conv3.bias`,
`layer2.block1.conv1.weight`), so checkpoints, `nnc compile` output and fine-tuning rules all
speak the spec's language. The forward pass is the graph's straight-line program
(compiler/forward.py), compiled once: no interpreter loop runs per step.
"""

from __future__ import annotations

import torch
from torch import nn

from nnc.compiler.forward import program, statements
from nnc.compiler.graph import Graph, LayerInfo
from nnc.compiler.layers import LAYERS
from nnc.compiler.modules import SpecNet
from nnc.compiler.vocab import initializers
from nnc.diagnostics import NncError


def _layer(info: LayerInfo, gen: torch.Generator | None) -> nn.Module:
    m = LAYERS[info.kind].build_torch(info.params, info.input)
    for tensor, dist, _ in info.init if gen is not None else ():
        initializers.apply(dist, getattr(m, tensor), gen)
    return m


def forward_source(graph: Graph) -> str:
    """`def run(m, ARGS)`: the forward pass, module layers called by position in `m`."""
    prog = program(graph)
    index = {l.path: i for i, l in enumerate(graph.modules())}
    body = statements(prog, lambda l, src, dst: [f"{dst} = m[{index[l.path]}]({src})"])
    ret = prog.returns[0] if len(prog.returns) == 1 else f"Multi(({', '.join(prog.returns)},))"
    return "\n".join([f"def run(m, {', '.join(prog.args)}):", *(f"    {b}" for b in body), f"    return {ret}", ""])


def build_model(graph: Graph, seed: int | None = None, init: bool = True) -> SpecNet:
    """A fresh model; `seed` (default: the spec's train seed) makes the initialization repeatable.
    `init=False`: torch's own initialization (the module's structure only, e.g. on the meta device)."""
    gen = torch.Generator().manual_seed(graph.spec.train.seed if seed is None else seed) if init else None
    try:
        layers = {l.path: _layer(l, gen) for l in graph.modules()}
        return SpecNet(layers, forward_source(graph), graph.spec.model.name)
    except (MemoryError, RuntimeError) as e:  # torch's "can't allocate memory: you tried to allocate ..."
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise NncError(f"{graph.spec.model.name} does not fit in memory: {graph.n_params:,} parameters need "
                       f"{graph.n_params * 4 / 2**30:,.1f} GiB in float32 before gradients and optimizer state "
                       f"(nnc show lists the parameters per layer)") from None
