"""Spec -> seeded train / validation / test splits of raw in-memory arrays.

"Raw" means shaped like the spec's `input` but not yet preprocessed: the same arrays a
deployment feeds to the exported ONNX graph. Problems with the data stop here, before
training, with exit 1 and a message that names the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.compiler.graph import Graph
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.sources import SOURCES, Arrays
from nnc.diagnostics import Diagnostic, NncError


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
    return NncError(Diagnostic(message, spec.spans.get("data"), spec.document, help))


def load_arrays(graph: Graph, given: Arrays | None = None):
    """The spec's data source's arrays (or `given`, handed over in memory by the Python API),
    checked and in the input's layout: (x, targets, class names)."""
    spec = graph.spec
    src = spec.data.source
    inp = spec.model.input
    if given is None:
        d = SOURCES[src.kind]
        params = src.params.model_copy(update={k: spec.locate(getattr(src.params, k)) for k in d.paths})
        arrays = d.load(params, inp, graph.output.features)
    else:
        arrays = given
    x, y = arrays.x, arrays.y
    if len(x) != len(y):
        raise _error(graph, f"{src.kind}: {len(x)} inputs but {len(y)} labels")
    if len(x) < 3:
        raise _error(graph, f"{src.kind}: only {len(x)} examples")
    x = _layout(graph, x)
    if inp.kind == "tokens":
        if not np.all(x == np.round(x)) or x.min() < 0 or x.max() >= inp.vocab:
            raise _error(graph, f"token ids must be whole numbers in [0, {inp.vocab}), found {x.min():g}..{x.max():g}")
        x = x.astype(np.int64)
    elif not np.all(np.isfinite(x)):
        raise _error(graph, "the inputs contain NaN or infinite values")
    return x, _targets(graph, y, arrays.classes), arrays.classes


def _layout(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The data's examples in the input's layout. Accepted beside an exact match: a flat row of
    the same values (in C, H, W or T, D order), images stored channels-last (H, W, C) as image
    files and most image arrays are, and (H, W) for one channel. Any other arrangement of the
    same number of values is refused: reshaping it would scramble the values silently."""
    inp = graph.spec.model.input
    got, want = tuple(x.shape[1:]), inp.dims
    per = int(np.prod(want))
    if got == want:
        return x
    if int(np.prod(got)) != per:
        raise _error(graph, f"the data's examples have shape {got} ({int(np.prod(got))} values), "
                            f"but the model's input is {inp} ({per} values)",
                     "change `input` in the model block to match the data")
    if len(got) == 1 or inp.kind == "vector":
        return x.reshape((len(x),) + want)
    if inp.kind == "image":
        c, h, w = want
        if got == (h, w, c):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if c == 1 and got == (h, w):
            return x[:, None]
    raise _error(graph, f"the data's examples have shape {got}, which is not the layout of the model's input {inp}",
                 "store examples as " + (f"(N, {', '.join(map(str, want))}), channels-last (N, {h}, {w}, {c}) or flat"
                                         if inp.kind == "image" else f"(N, {', '.join(map(str, want))}) or flat"))


def _targets(graph: Graph, y: np.ndarray, classes: list[str] | None) -> np.ndarray:
    """Integer class labels (N,) for a classification loss, float targets (N, outputs) otherwise."""
    spec = graph.spec
    loss = LOSSES[spec.loss.kind]
    outputs = graph.output.features
    if not loss.classification:
        if y.size != len(y) * outputs:
            kind = "one integer label" if y.dtype.kind in "iu" and y.ndim == 1 else f"{y.size // max(len(y), 1)} value(s)"
            raise _error(graph, f"{spec.loss.kind} needs {outputs} target value(s) per example (the last layer's "
                                f"outputs), the data has {kind} per example",
                         "for class labels use loss cross_entropy or svm")
        return y.astype(np.float32).reshape(len(y), outputs)
    if y.ndim == 2 and y.shape[1] == 1:  # a column of labels
        y = y[:, 0]
    if y.ndim != 1:
        raise _error(graph, f"{spec.loss.kind} needs one integer class label per example, the data's labels "
                            f"have shape {tuple(y.shape[1:])} each",
                     "one-hot labels: store y.argmax(1)")
    if y.dtype.kind == "f":
        raise _error(graph, f"{spec.loss.kind} needs integer class labels, the data has float targets",
                     "use loss mse or l1 for regression")
    found = len(classes) if classes is not None else int(y.max()) + 1 if len(y) else 0
    if len(y) and y.min() < 0:
        raise _error(graph, f"labels out of range: found label {int(y.min())} (classes are 0..{outputs - 1})")
    if found != outputs:
        what = f"{found} classes" if classes is not None else f"labels 0..{found - 1} ({found} classes)"
        raise _error(graph, f"the data has {what}, but the last layer has {outputs} outputs",
                     f"set the last dense layer to {found} units")
    return y


def tensors(split: Split, stats: dict, device) -> tuple:
    """A split as (x, y) tensors on `device`, with the preprocessing statistics `stats` applied."""
    import torch

    from nnc.runtime import preprocess

    x = preprocess.apply(stats, split.x.astype(np.float32)) if stats else split.x
    return torch.as_tensor(np.ascontiguousarray(x)).to(device), torch.as_tensor(split.y).to(device)


def load_splits(graph: Graph, given: Arrays | None = None) -> Splits:
    """Seeded by `data seed` (not `train seed`): the same spec gives the same splits in `train`,
    `eval` and `doctor`, and runs that differ only in their train seed share them (an ensemble).
    `given`: arrays handed over in memory, in place of the spec's data source."""
    spec = graph.spec
    x, y, classes = load_arrays(graph, given)
    n = len(x)
    perm = np.random.default_rng(spec.data.seed).permutation(n)
    n_test, n_val = int(round(spec.data.test * n)), int(round(spec.data.val * n))
    if n - n_test - n_val < 1:
        raise _error(graph, f"{n} examples leave nothing to train on after val {spec.data.val:g} and test {spec.data.test:g}")
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return Splits(*(Split(x[i], y[i]) for i in (train, val, test)), classes)
