"""Spec -> seeded train / validation / test splits of raw in-memory arrays.

"Raw" means shaped like the spec's `input` but not yet preprocessed: the same arrays a
deployment feeds to the exported ONNX graph. Problems with the data stop here, before
training, with exit 1 and a message that names the problem. Data streamed from disk
(runtime/stream.py) is split by the same `split_indices` and checked by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from nnc.compiler.graph import Graph
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.data_plan import located
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
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # unreadable examples, skipped


def data_error(graph: Graph, message: str, help: str | None = None) -> NncError:
    spec = graph.spec
    return NncError(Diagnostic(message, spec.spans.get("data"), spec.document, help))


def load_arrays(graph: Graph, given: Arrays | None = None) -> Arrays:
    """The whole source in memory (or `given`, handed over in memory by the Python API), checked:
    the input's layout, finite values, the loss's targets."""
    spec = graph.spec
    src = spec.data.source
    arrays = given if given is not None else \
        SOURCES[src.kind].load(located(spec), spec.model.input.dims, graph.output.features)
    x, y = arrays.x, arrays.y
    if len(x) != len(y):
        raise data_error(graph, f"{src.kind}: {len(x)} inputs but {len(y)} labels")
    if len(x) < 3:
        raise data_error(graph, f"{src.kind}: only {len(x)} examples")
    x = layout(graph, x)
    problem = value_problem(graph, x)
    if problem:
        raise data_error(graph, problem)
    if spec.model.input.kind == "tokens":
        x = x.astype(np.int64)
    return replace(arrays, x=x, y=targets(graph, y, arrays.classes))


def value_problem(graph: Graph, x: np.ndarray) -> str | None:
    """What is wrong with the values of (a batch of) inputs, if anything."""
    inp = graph.spec.model.input
    if inp.kind == "tokens":
        if len(x) and (not np.all(x == np.round(x)) or x.min() < 0 or x.max() >= inp.vocab):
            return f"token ids must be whole numbers in [0, {inp.vocab}), found {x.min():g}..{x.max():g}"
    elif x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        return "the inputs contain NaN or infinite values"
    return None


@dataclass(frozen=True)
class Layout:
    """How stored examples become the input's layout: "same", "reshape" (a flat row), "hwc"
    (channels-last images, transposed) or "hw" (one channel)."""

    kind: str
    dims: tuple[int, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "reshape":
            return x.reshape((len(x),) + self.dims)
        if self.kind == "hwc":
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if self.kind == "hw":
            return x[:, None]
        return x


def layout(graph: Graph, x: np.ndarray) -> np.ndarray:
    return layout_of(graph, tuple(x.shape[1:])).apply(x)


def layout_of(graph: Graph, got: tuple[int, ...]) -> Layout:
    """The data's examples in the input's layout. Accepted beside an exact match: a flat row of
    the same values (in C, H, W or T, D order), images stored channels-last (H, W, C) as image
    files and most image arrays are, and (H, W) for one channel. Any other arrangement of the
    same number of values is refused: reshaping it would scramble the values silently."""
    inp = graph.spec.model.input
    want = inp.dims
    per = int(np.prod(want))
    if got == want:
        return Layout("same", want)
    if int(np.prod(got)) != per:
        raise data_error(graph, f"the data's examples have shape {got} ({int(np.prod(got))} values), "
                            f"but the model's input is {inp} ({per} values)",
                     "change `input` in the model block to match the data")
    if len(got) == 1 or inp.kind == "vector":
        return Layout("reshape", want)
    if inp.kind == "image":
        c, h, w = want
        if got == (h, w, c):
            return Layout("hwc", want)
        if c == 1 and got == (h, w):
            return Layout("hw", want)
    raise data_error(graph, f"the data's examples have shape {got}, which is not the layout of the model's input {inp}",
                 "store examples as " + (f"(N, {', '.join(map(str, want))}), channels-last (N, {h}, {w}, {c}) or flat"
                                         if inp.kind == "image" else f"(N, {', '.join(map(str, want))}) or flat"))


def targets(graph: Graph, y: np.ndarray, classes: list[str] | None) -> np.ndarray:
    """Integer class labels (N,) for a classification loss, float targets (N, outputs) otherwise."""
    spec = graph.spec
    loss = LOSSES[spec.loss.kind]
    outputs = graph.output.features
    if not loss.classification:
        if y.size != len(y) * outputs:
            kind = "one integer label" if y.dtype.kind in "iu" and y.ndim == 1 else f"{y.size // max(len(y), 1)} value(s)"
            raise data_error(graph, f"{spec.loss.kind} needs {outputs} target value(s) per example (the last layer's "
                                f"outputs), the data has {kind} per example",
                         "for class labels use loss cross_entropy or svm")
        return y.astype(np.float32).reshape(len(y), outputs)
    if y.ndim == 2 and y.shape[1] == 1:  # a column of labels
        y = y[:, 0]
    if y.ndim != 1:
        raise data_error(graph, f"{spec.loss.kind} needs one integer class label per example, the data's labels "
                            f"have shape {tuple(y.shape[1:])} each",
                     "one-hot labels: store y.argmax(1)")
    if y.dtype.kind == "f":
        raise data_error(graph, f"{spec.loss.kind} needs integer class labels, the data has float targets",
                     "use loss mse or l1 for regression")
    found = len(classes) if classes is not None else int(y.max()) + 1 if len(y) else 0
    if len(y) and y.min() < 0:
        raise data_error(graph, f"labels out of range: found label {int(y.min())} (classes are 0..{outputs - 1})")
    if found != outputs:
        what = f"{found} classes" if classes is not None else f"labels 0..{found - 1} ({found} classes)"
        raise data_error(graph, f"the data has {what}, but the last layer has {outputs} outputs",
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
    `given`: arrays handed over in memory, in place of the spec's data source. Unreadable images
    are dropped from their split (too many of them stop here)."""
    arrays = load_arrays(graph, given)
    parts = split_indices(graph, len(arrays.x), arrays.parts)
    check_bad(graph, arrays.bad, len(arrays.x))
    bad = np.array([i for i, _, _ in arrays.bad], np.int64)
    parts = {k: v[~np.isin(v, bad)] if len(bad) else v for k, v in parts.items()}
    return Splits(*(Split(arrays.x[parts[k]], arrays.y[parts[k]]) for k in ("train", "val", "test")), arrays.classes,
                  arrays.bad)


def split_indices(graph: Graph, n: int, given: dict[str, tuple[int, int]] | None) -> dict[str, np.ndarray]:
    """Indices of the train, val and test examples among the source's n. A split the source
    gives as its own (a folder) is that range; the others are drawn from the training examples
    (all n, without separate folders) by the data section's fractions, seeded by `data seed`."""
    spec = graph.spec
    given = given or {}
    pool = np.arange(*given["train"]) if "train" in given else np.arange(n)
    perm = pool[np.random.default_rng(spec.data.seed).permutation(len(pool))]
    out, at = {}, 0
    for k, fraction in (("test", spec.data.test), ("val", spec.data.val)):
        if k in given:
            out[k] = np.arange(*given[k])
        else:
            take = int(round(fraction * len(pool)))
            out[k], at = perm[at:at + take], at + take
    out["train"] = perm[at:]
    if not len(out["train"]):
        raise data_error(graph, f"{len(pool)} examples leave nothing to train on after val {spec.data.val:g} "
                            f"and test {spec.data.test:g}")
    return out


def check_bad(graph: Graph, bad: list[tuple[int, str, str]], n: int, count: int | None = None) -> None:
    """More than `data max_bad` of the examples unreadable: the data is broken, not a few files.
    `bad`: (index, file, why) of those known here; `count`: how many there are in all (several
    processes each know their own)."""
    limit, count = graph.spec.data.max_bad, len(bad) if count is None else count
    if count > limit * n:
        shown = "; ".join(f"{f} ({why})" for _, f, why in bad[:3])
        raise data_error(graph, f"{count:,} of {n:,} images could not be read, more than max_bad {limit:g}"
                            + (f": {shown}{' ...' if count > 3 else ''}" if shown else ""),
                     "fix or remove those files, or allow more with data ..., max_bad F")
