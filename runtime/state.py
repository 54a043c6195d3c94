"""Optimizer and RNG state <-> (tensors, JSON) so that `last` checkpoints need no pickle."""

from __future__ import annotations

from typing import Any

import torch


def optimizer_to_tensors(opt: torch.optim.Optimizer, prefix: str = "optim") -> tuple[dict, dict]:
    """Tensors by name, the rest as JSON. A list of tensors (L-BFGS's history: old_dirs, ro, ...)
    is stored entry by entry, `KEY#J`, with its length (and its None entries) in the JSON."""
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        scalars = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}/{idx}/{k}"] = v
            elif isinstance(v, (list, tuple)) and any(torch.is_tensor(x) for x in v):
                scalars[k] = {"tensor_list": len(v), "none": [j for j, x in enumerate(v) if x is None]}
                tensors.update({f"{prefix}/{idx}/{k}#{j}": x for j, x in enumerate(v) if x is not None})
            else:
                scalars[k] = v
        meta["state"][str(idx)] = scalars
    return tensors, meta


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict, meta: dict, prefix: str = "optim") -> None:
    state: dict[int, dict[str, Any]] = {int(i): dict(s) for i, s in meta["state"].items()}
    for st in state.values():
        for k, v in list(st.items()):
            if isinstance(v, dict) and "tensor_list" in v:
                st[k] = [None] * v["tensor_list"]
    for name, t in tensors.items():
        if not name.startswith(prefix + "/"):
            continue
        _, idx, key = name.split("/", 2)
        key, _, j = key.partition("#")
        if j:
            state[int(idx)][key][int(j)] = t
        else:
            state.setdefault(int(idx), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_to_tensors(gen: torch.Generator) -> dict:
    out = {"rng/torch": torch.get_rng_state(), "rng/shuffle": gen.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng/cuda{i}"] = s
    return out


def rng_from_tensors(tensors: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    gen.set_state(tensors["rng/shuffle"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
