"""Parameter groups (L2 on weights only, Caffe's lr_mult / decay_mult, frozen layers),
the L1 / AdamW-L2 penalty, and the max-norm constraint."""

from __future__ import annotations

import torch

from nnc.compiler.graph import Graph

NO_DECAY_ROLES = ("bias", "scale", "shift", "alpha")


def roles(graph: Graph) -> dict[str, str]:
    """parameter name -> role (weight, bias, scale, shift, alpha, embedding)."""
    return {f"{l.path}.{t.name}": t.role for l in graph.layers() for t in l.tensors}


def _names(graph: Graph) -> dict[str, tuple[str, ...]]:
    """layer path -> the names rules may give it: its path, each prefix (a stage, a block, a
    residual block around it) and the bare names written in the model block (res1, conv3)."""
    return {l.path: l.selectors for l in graph.layers()}


def _layers_of(name: str, names: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    layer = name.rsplit(".", 1)[0]
    return names.get(layer, tuple(layer.split(".")))


def _mult(name: str, table: dict[str, float], names: dict[str, tuple[str, ...]]) -> float:
    m = 1.0
    for layer in _layers_of(name, names):
        m *= table.get(layer, 1.0)
    return m


def param_groups(model: torch.nn.Module, graph: Graph, coupled_l2: bool) -> list[dict]:
    """One group per (lr multiplier, weight decay). With `coupled_l2` the notes' L2 (gradient
    l2*w) is the optimizer's weight_decay; otherwise (AdamW) it is added to the loss."""
    spec = graph.spec
    reg, opt = spec.regularize, spec.optimizer
    role = roles(graph)
    names = _names(graph)
    frozen = set(spec.train.freeze)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if frozen & set(_layers_of(name, names)):
            p.requires_grad_(False)
            continue
        decays = reg.decay_bias or role.get(name, "weight") not in NO_DECAY_ROLES
        decay = reg.l2 * _mult(name, opt.decay_mult, names) if decays and coupled_l2 else 0.0
        groups.setdefault((_mult(name, opt.lr_mult, names), decay), []).append(p)
    out = []
    for (lr_mult, decay), params in sorted(groups.items()):
        g = {"params": params, "lr_mult": lr_mult}
        if coupled_l2:
            g["weight_decay"] = decay
        out.append(g)
    return out


def decayed(model: torch.nn.Module, graph: Graph) -> list[tuple[torch.Tensor, float]]:
    """(parameter, decay multiplier) for every tensor that L1 / L2 penalties apply to."""
    spec = graph.spec
    role = roles(graph)
    names = _names(graph)
    return [(p, _mult(n, spec.optimizer.decay_mult, names)) for n, p in model.named_parameters()
            if p.requires_grad and (spec.regularize.decay_bias or role.get(n, "weight") not in NO_DECAY_ROLES)]


def penalty(params: list[tuple[torch.Tensor, float]], l1: float, l2: float) -> torch.Tensor | float:
    """l1 * sum|w| + l2/2 * sum w^2 (the notes' R(W); elastic net when both are set)."""
    total = 0.0
    for p, m in params:
        if l1:
            total = total + l1 * m * p.abs().sum()
        if l2:
            total = total + 0.5 * l2 * m * p.pow(2).sum()
    return total


def max_norm_targets(model: torch.nn.Module, graph: Graph) -> list[torch.Tensor]:
    """Weight tensors whose rows (one per output unit / filter) max-norm constrains."""
    role = roles(graph)
    return [p for n, p in model.named_parameters() if p.requires_grad and role.get(n) == "weight" and p.dim() >= 2]


@torch.no_grad()
def apply_max_norm(weights: list[torch.Tensor], c: float) -> None:
    """||w_i||_2 <= c for each output unit i, after every update (Srivastava et al. 2014)."""
    for w in weights:
        w.copy_(torch.renorm(w, 2, 0, c))
