"""Spec -> seeded train / validation / test splits of raw in-memory arrays.

"Raw" means shaped like the spec's `input` but not yet preprocessed: the same arrays a
deployment feeds to the exported ONNX graph. Problems with the data stop here, before
training, with exit 1 and a message that names the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.compiler.diagnostics import Diagnostic, NncError
from nnc.compiler.shapes import Graph
from nnc.runtime.losses import LOSSES
from nnc.runtime.sources import SOURCES


@dataclass
class Split:
    x: np.ndarray  # (N, *input dims) float32 (int64 token ids for tokens inputs)
    y: np.ndarray  # (N,) int64 labels or (N, ...) float32 targets

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    classes: list[str] | None


def _error(graph: Graph, message: str, help: str | None = None) -> NncError:
    spec = graph.spec
    return NncError(Diagnostic(message, spec.spans.get("data"), spec.source, help))


def load_arrays(graph: Graph):
    spec = graph.spec
    src = spec.data.source
    inp = spec.model.input
    arrays = SOURCES[src.kind].load(src.params, inp.dims, graph.output.features)
    x, y = arrays.x, arrays.y
    if len(x) != len(y):
        raise _error(graph, f"{src.kind}: {len(x)} inputs but {len(y)} labels")
    if len(x) < 3:
        raise _error(graph, f"{src.kind}: only {len(x)} examples")
    per = int(np.prod(inp.dims))
    if x.shape[1:] != inp.dims:
        if int(np.prod(x.shape[1:])) != per:
            raise _error(graph, f"the data's examples have shape {tuple(x.shape[1:])} ({int(np.prod(x.shape[1:]))} values), "
                                f"but the model's input is {inp} ({per} values)",
                         "change `input` in the model block to match the data")
        x = x.reshape((len(x),) + inp.dims)
    if inp.kind == "tokens":
        if not np.all(x == np.round(x)) or x.min() < 0 or x.max() >= inp.vocab:
            raise _error(graph, f"token ids must be whole numbers in [0, {inp.vocab}), found {x.min():g}..{x.max():g}")
        x = x.astype(np.int64)
    elif not np.all(np.isfinite(x)):
        raise _error(graph, "the inputs contain NaN or infinite values")
    loss = LOSSES[spec.loss.kind]
    outputs = graph.output.features
    if loss.classification:
        if y.dtype.kind == "f":
            raise _error(graph, f"{spec.loss.kind} needs integer class labels, the data has float targets",
                         "use loss mse or l1 for regression")
        if arrays.classes is not None and len(arrays.classes) != outputs:
            raise _error(graph, f"the data has {len(arrays.classes)} classes, but the last layer has {outputs} outputs",
                         f"set the last dense layer to {len(arrays.classes)} units")
        if len(y) and (y.min() < 0 or y.max() >= outputs):
            raise _error(graph, f"labels out of range: found labels {int(y.min())}..{int(y.max())}, "
                                f"but the last layer has {outputs} outputs (classes 0..{outputs - 1})")
    else:
        y = y.astype(np.float32)
    return x, y, arrays.classes


def load_splits(graph: Graph) -> Splits:
    """Seeded by `data seed` (not `train seed`): the same spec gives the same splits in `train`,
    `eval` and `doctor`, and runs that differ only in their train seed share them (an ensemble)."""
    spec = graph.spec
    x, y, classes = load_arrays(graph)
    n = len(x)
    perm = np.random.default_rng(spec.data.seed).permutation(n)
    n_test, n_val = int(round(spec.data.test * n)), int(round(spec.data.val * n))
    if n - n_test - n_val < 1:
        raise _error(graph, f"{n} examples leave nothing to train on after val {spec.data.val:g} and test {spec.data.test:g}")
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return Splits(*(Split(x[i], y[i]) for i in (train, val, test)), classes)
