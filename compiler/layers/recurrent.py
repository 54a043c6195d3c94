"""Recurrent layers over sequences (T, D): rnn, lstm, gru (batch-first, PyTorch's gate layout).

Shape: (T, D) -> (H*dirs) with `return last` (the final hidden state of the top layer,
both directions concatenated), or (T, H*dirs) with `return sequence`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Inferred, LayerDef, Params, Positive, Shape, ShapeError, Tensor

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


class Recurrent(Params):
    hidden: Positive
    layers: int = Field(1, ge=1)
    bidirectional: bool = False
    # `return` is a Python keyword, hence the alias
    output: Literal["last", "sequence"] = Field("last", alias="return")
    activation: Literal["tanh", "relu"] = "tanh"  # rnn only


def tensors(kind: str, p: Recurrent, d: int) -> list[Tensor]:
    g, h, dirs = GATES[kind], p.hidden, 2 if p.bidirectional else 1
    out = []
    for layer in range(p.layers):
        width = d if layer == 0 else h * dirs
        for sfx in ("", "_reverse")[:dirs]:
            out += [Tensor(f"weight_ih_l{layer}{sfx}", (g * h, width), "weight", width, g * h),
                    Tensor(f"weight_hh_l{layer}{sfx}", (g * h, h), "weight", h, g * h),
                    Tensor(f"bias_ih_l{layer}{sfx}", (g * h,), "bias", width, g * h),
                    Tensor(f"bias_hh_l{layer}{sfx}", (g * h,), "bias", h, g * h)]
    return out


def _infer(kind: str):
    def infer(p: Recurrent, x: Shape) -> Inferred:
        if x.kind != "sequence":
            help = "add an embedding first" if x.kind == "tokens" else "declare `input sequence(T, D)`"
            raise ShapeError(f"{kind} needs a sequence (T, D), got {x}", help=help)
        if kind != "rnn" and p.activation != "tanh":
            raise ShapeError(f"{kind} has no `activation` option (only rnn does)", "activation")
        t, d = x.dims
        dirs = 2 if p.bidirectional else 1
        ts = tensors(kind, p, d)
        flops = 2 * t * sum(w.numel for w in ts if w.role == "weight")
        out = Shape("vector", (p.hidden * dirs,)) if p.output == "last" else Shape("sequence", (t, p.hidden * dirs))
        return Inferred(out, tuple(ts), flops)
    return infer


def _build(kind: str):
    def build(p: Recurrent, x: Shape):
        from nnc.compiler import modules

        cls = {"rnn": modules.RNN, "lstm": modules.LSTM, "gru": modules.GRU}[kind]
        extra = {"nonlinearity": p.activation} if kind == "rnn" else {}
        return cls(x.dims[1], p.hidden, p.layers, batch_first=True, bidirectional=p.bidirectional,
                   return_last=p.output == "last", **extra)
    return build


def _label(kind: str):
    def label(name: str, p: Recurrent) -> str:
        bi = "bidirectional " if p.bidirectional else ""
        layers = f"{p.layers} layers of " if p.layers > 1 else ""
        return f"{name.upper()}: {layers}{bi}{kind.upper()} of {p.hidden}, returns the {p.output} step" \
            .replace("the sequence step", "whole sequence")
    return label


LAYERS = tuple(
    LayerDef(kind, Recurrent, _infer(kind), _build(kind),
             f"{kind}: (T, D) -> (hidden*dirs) with `return last`, (T, hidden*dirs) with `return sequence`",
             positional=("hidden",), prefix=kind, label=_label(kind))
    for kind in ("rnn", "lstm", "gru")
)
