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


class Multi:
    """The values of a model with several inputs or outputs, batched together: indexing, `len`,
    `.to()`, `.float()` act on each (in the training loop, the doctor and evaluation a batch of
    several inputs moves like one tensor). `parts` are in the model's input (or output) order."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = tuple(parts)

    def __getitem__(self, idx) -> "Multi":
        return Multi(t[idx] for t in self.parts)

    def __len__(self) -> int:
        return len(self.parts[0])

    def _each(self, f) -> "Multi":
        return Multi(f(t) for t in self.parts)

    def to(self, *args, **kwargs) -> "Multi":
        return self._each(lambda t: t.to(*args, **kwargs))

    def float(self) -> "Multi":
        return self._each(lambda t: t.float() if t.is_floating_point() else t)

    def double(self) -> "Multi":
        return self._each(lambda t: t.double() if t.is_floating_point() else t)

    def detach(self) -> "Multi":
        return self._each(lambda t: t.detach())

    def contiguous(self, memory_format=torch.contiguous_format) -> "Multi":
        return self._each(lambda t: t.contiguous(memory_format=memory_format) if t.dim() == 4 else t)

    def is_floating_point(self) -> bool:
        return any(t.is_floating_point() for t in self.parts)

    @property
    def device(self):
        return self.parts[0].device

    def __repr__(self) -> str:
        return f"Multi({', '.join(str(tuple(t.shape)) for t in self.parts)})"


def first(t):
    """The first output of a model's scores (or the first input of a batch): what accuracy reads."""
    return t.parts[0] if type(t) is Multi else t


class Scope(nn.Module):
    """A group of layers named together (a residual block, a block use, a branch): holds them
    so that their parameters read layer2.block1.conv1.weight; SpecNet's forward calls them."""


class SpecNet(nn.Module):
    """The compiled model: the layers as named submodules (nested in Scopes by their paths), run
    by a forward pass generated from the graph as straight-line code (compiler/forward.py).
    Several inputs are several arguments (or one Multi); several outputs come back as a Multi."""

    def __init__(self, layers: dict[str, nn.Module], source: str, name: str = "model"):
        super().__init__()
        for path, m in layers.items():
            parent = self
            *scopes, leaf = path.split(".")
            for part in scopes:
                if part not in parent._modules:
                    parent.add_module(part, Scope())
                parent = parent._modules[part]
            parent.add_module(leaf, m)
        self.spec_name = name
        self._steps = list(layers.values())  # the generated code calls them by position: no attribute lookups
        self._source = source
        self._compile()

    def _compile(self) -> None:
        namespace = {"torch": torch, "Multi": Multi}
        exec(compile(self._source, f"<nnc {self.spec_name}>", "exec"), namespace)
        self._run = namespace["run"]

    def forward(self, *xs):
        if len(xs) == 1 and type(xs[0]) is Multi:
            xs = xs[0].parts
        return self._run(self._steps, *xs)

    def __getstate__(self):  # pickling (a DataParallel copy, torch.save): the compiled function is rebuilt
        state = dict(self.__dict__)
        state.pop("_run", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._compile()
