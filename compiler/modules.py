"""The few torch modules that torch.nn lacks, and the module a spec compiles to.

Imported only by torch builders (never by `nnc check` / `nnc show`).
"""

from __future__ import annotations

import torch
from torch import nn


class Maxout(nn.Module):
    """Max over groups of `pieces` consecutive features along `dim`."""

    def __init__(self, pieces: int, dim: int):
        super().__init__()
        self.pieces, self.dim = pieces, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim % x.dim()
        shape = x.shape[:dim] + (x.shape[dim] // self.pieces, self.pieces) + x.shape[dim + 1:]
        return x.reshape(shape).amax(dim + 1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class _Select:
    """Recurrent layer returning the last hidden state (both directions) or the whole sequence."""

    def __init__(self, *args, return_last: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.return_last = return_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = super().forward(x)
        if not self.return_last:
            return out
        h = h[0] if isinstance(h, tuple) else h  # LSTM's (h_n, c_n); h_n: (layers*dirs, B, H)
        return torch.cat([h[-2], h[-1]], 1) if self.bidirectional else h[-1]


class RNN(_Select, nn.RNN):
    pass


class LSTM(_Select, nn.LSTM):
    pass


class GRU(_Select, nn.GRU):
    pass


class Residual(nn.Module):
    """out = body(x) + shortcut(x); the shortcut is the identity, or a 1x1 conv + batchnorm."""

    def __init__(self, body: dict[str, nn.Module], proj: nn.Module | None = None, proj_bn: nn.Module | None = None):
        super().__init__()
        for name, m in body.items():
            self.add_module(name, m)
        self._body = list(body)
        self.proj, self.proj_bn = proj, proj_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in self._body:
            y = self._modules[name](y)
        s = x if self.proj is None else self.proj_bn(self.proj(x))
        return y + s


class SpecNet(nn.Module):
    """The compiled model: named children run in order. Parameter names follow layer names."""

    def __init__(self, layers: dict[str, nn.Module], name: str = "model"):
        super().__init__()
        for layer_name, m in layers.items():
            self.add_module(layer_name, m)
        self.spec_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self._modules.values():
            x = m(x)
        return x
