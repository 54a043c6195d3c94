"""Recurrent layers over sequences (T, D): rnn, lstm, gru (batch-first, PyTorch's gate layout).

Shape: (T, D) -> (H*dirs) with `return last` (the final hidden state of the top layer,
both directions concatenated), or (T, H*dirs) with `return sequence`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Inferred, LayerDef, Params, Positive, Shape, ShapeError, Tensor, Watch

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


# PyTorch's gate blocks -> ONNX's: LSTM (i, f, g, o) -> (i, o, f, c); GRU (r, z, n) -> (z, r, h)
ONNX_GATES = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _onnx(kind: str):
    def emit(e, info, x: str) -> str:
        import numpy as np  # here, not at the top: `nnc check` never pays for numpy

        p: Recurrent = info.params
        h, dirs, order = p.hidden, 2 if p.bidirectional else 1, ONNX_GATES[kind]

        def gates(a):  # reorder the gate blocks along axis 0
            return np.concatenate([a[i * h:(i + 1) * h] for i in order])

        path = info.path
        seq = e.op("Transpose", [x], f"{path}.time_major", perm=[1, 0, 2])  # (T, N, D)
        extra = {"linear_before_reset": 1} if kind == "gru" else {}
        if kind == "rnn":
            extra["activations"] = [p.activation.capitalize()] * dirs
        for layer in range(p.layers):
            sfx = ("", "_reverse")[:dirs]
            t = {n: np.stack([gates(e.tensor(info, f"{n}_l{layer}{s}")) for s in sfx])
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            w = e.param(info, f"W_l{layer}", t["weight_ih"])
            r = e.param(info, f"R_l{layer}", t["weight_hh"])
            b = e.param(info, f"B_l{layer}", np.concatenate([t["bias_ih"], t["bias_hh"]], axis=1))
            y, y_h = e.op(ONNX_OP[kind], [seq, w, r, b], f"{path}.l{layer}", n_out=2, hidden_size=h,
                          direction="bidirectional" if dirs == 2 else "forward", **extra)
            # Y: (T, dirs, N, H) -> (T, N, dirs*H), forward then backward features as in torch
            y = e.op("Transpose", [y], f"{path}.l{layer}.steps", perm=[0, 2, 1, 3])
            seq = e.op("Reshape", [y, e.ints([0, 0, dirs * h], f"{path}.l{layer}.shape")], f"{path}.l{layer}.out")
        if p.output == "sequence":
            return e.op("Transpose", [seq], path, perm=[1, 0, 2])  # (N, T, dirs*H)
        last = e.op("Transpose", [y_h], f"{path}.last", perm=[1, 0, 2])  # (N, dirs, H)
        return e.op("Reshape", [last, e.ints([0, dirs * h], f"{path}.last_shape")], path)
    return emit


def _source(kind: str):
    def source(p: Recurrent, x: Shape) -> tuple[str, tuple[str, ...]]:
        cls = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind]
        extra = f", nonlinearity={p.activation!r}" if kind == "rnn" and p.activation != "tanh" else ""
        extra += ", bidirectional=True" if p.bidirectional else ""
        ctor = f"nn.{cls}({x.dims[1]}, {p.hidden}, num_layers={p.layers}, batch_first=True{extra})"
        if p.output == "sequence":
            return ctor, ("x, _ = {m}(x)",)
        h = "h[0]" if kind == "lstm" else "h"  # LSTM returns (h_n, c_n); h_n: (layers*dirs, B, H)
        last = f"torch.cat([{h}[-2], {h}[-1]], 1)" if p.bidirectional else f"{h}[-1]"
        return ctor, ("_, h = {m}(x)", f"x = {last}")
    return source


LAYERS = tuple(
    LayerDef(kind, Recurrent, _infer(kind), _build(kind),
             f"{kind}: (T, D) -> (hidden*dirs) with `return last`, (T, hidden*dirs) with `return sequence`",
             positional=("hidden",), prefix=kind, label=_label(kind), init_self="xavier", watch=Watch(),
             onnx=_onnx(kind), python=_source(kind))
    for kind in ("rnn", "lstm", "gru")
)
