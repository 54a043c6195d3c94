"""Spec -> seeded train / validation / test splits of raw in-memory arrays.

"Raw" means shaped like the spec's `input` but not yet preprocessed: the same arrays a
deployment feeds to the exported ONNX graph. Problems with the data stop here, before
training, with exit 1 and a message that names the problem. Data streamed from disk
(runtime/stream.py) is split by the same `split_indices` and checked by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from nnc.compiler.data_plan import located
from nnc.compiler.graph import Graph
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.sources import SOURCES, Arrays
from nnc.diagnostics import Diagnostic, NncError


@dataclass
class Split:
    x: np.ndarray  # (N, *input dims) float32 (int64 token ids for tokens inputs); a tuple of them for several inputs
    y: np.ndarray  # (N,) int64 labels, (N, H, W) per pixel, or (N, ...) float32 targets; a tuple for several outputs

    def __len__(self) -> int:
        return len(self.x[0] if isinstance(self.x, tuple) else self.x)


def take(a, idx):
    """Rows `idx` of an array, or of each array of a tuple (several inputs or outputs)."""
    return tuple(t[idx] for t in a) if isinstance(a, tuple) else a[idx]


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
    the input's layout, finite values, the loss's targets. A model of several inputs or outputs
    gets a tuple of arrays for x (y)."""
    spec = graph.spec
    src = spec.data.source
    if given is None:
        params = located(spec)
        if graph.several or src.kind == "synthetic" and graph.output.kind == "image":
            arrays = _load_several(graph, params)
            return arrays if graph.several else replace(arrays, x=arrays.x[0], y=arrays.y[0])
        arrays = SOURCES[src.kind].load(params, spec.model.input, graph.output.features)
    elif graph.several:
        raise data_error(graph, "data handed over in memory is one x and one y: a model of several inputs or outputs "
                                "reads them from an npz of named arrays")
    else:
        arrays = given
    x, y = arrays.x, arrays.y
    if len(x) != len(y):
        raise data_error(graph, f"{src.kind}: {len(x)} inputs but {len(y)} labels")
    if len(x) < 3:
        raise data_error(graph, f"{src.kind}: only {len(x)} examples")
    return replace(arrays, x=_input(graph, spec.model.input, x), y=targets(graph, y, arrays.classes))


def _input(graph: Graph, inp, x: np.ndarray) -> np.ndarray:
    x = layout(graph, x, inp)
    problem = value_problem(graph, x, inp)
    if problem:
        raise data_error(graph, problem)
    return x.astype(np.int64) if inp.kind == "tokens" else x


def _load_several(graph: Graph, params) -> Arrays:
    """A model of several inputs or outputs reads them by name: the arrays of an npz named after
    the model's inputs and outputs (or as its `x=(...)` / `y=(...)` say), or synthetic ones."""
    spec = graph.spec
    kind = spec.data.source.kind
    m = spec.model
    if kind == "synthetic":
        rng = np.random.default_rng(params.seed)
        xs = [rng.standard_normal((params.n, *i.shape.dims)).astype(np.float32) if i.shape.kind != "tokens"
              else rng.integers(0, i.shape.vocab, (params.n, *i.shape.dims)) for i in m.inputs]
        ys = [rng.integers(0, params.classes or shape.features, (params.n, *(shape.dims[1:] if shape.kind == "image" else ())))
              if LOSSES[ol.choice.kind].classification else rng.standard_normal((params.n, *shape.dims)).astype(np.float32)
              for (_, _, shape), ol in zip(graph.outputs, spec.losses)]
        classes = None
    elif kind == "npz":
        from nnc.compiler.vocab.sources import read_npz

        xs, ys, classes = read_npz(params, [i.name for i in m.inputs], [o.name for o in m.outputs])
    else:
        raise data_error(graph, f"a model of several inputs or outputs reads npz (arrays named after them) or synthetic "
                                f"data, not {kind}")
    n = {len(a) for a in (*xs, *ys)}
    if len(n) > 1 or min(n) < 3:
        raise data_error(graph, f"{kind}: the arrays hold {sorted(n)} examples: every input and output needs the same "
                                "number, at least 3")
    x = tuple(_input(graph, i.shape, a) for i, a in zip(m.inputs, xs))
    y = tuple(targets(graph, a, classes if k == 0 else None, shape, ol.choice.kind, name)
              for k, (a, (name, _, shape), ol) in enumerate(zip(ys, graph.outputs, spec.losses)))
    return Arrays(x, y, classes)


def value_problem(graph: Graph, x: np.ndarray, inp=None) -> str | None:
    """What is wrong with the values of (a batch of) inputs, if anything."""
    inp = inp or graph.spec.model.input
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


def layout(graph: Graph, x: np.ndarray, inp=None) -> np.ndarray:
    return layout_of(graph, tuple(x.shape[1:]), inp).apply(x)


def layout_of(graph: Graph, got: tuple[int, ...], inp=None) -> Layout:
    """The data's examples in the input's layout. Accepted beside an exact match: a flat row of
    the same values (in C, H, W or T, D order), images stored channels-last (H, W, C) as image
    files and most image arrays are, and (H, W) for one channel. Any other arrangement of the
    same number of values is refused: reshaping it would scramble the values silently."""
    inp = inp or graph.spec.model.input
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


def targets(graph: Graph, y: np.ndarray, classes: list[str] | None, out=None, loss_kind: str | None = None,
            name: str = "") -> np.ndarray:
    """Integer class labels for a classification loss: (N,) for class scores, (N, H, W) for an
    image of scores per pixel; float targets shaped like the output otherwise. `out`, `loss_kind`,
    `name`: the output of a model of several (default: the model's one output and loss)."""
    out = out or graph.output
    loss_kind = loss_kind or graph.spec.loss.kind
    loss = LOSSES[loss_kind]
    which = f"output {name}: " if name else ""
    if not loss.classification:
        if y.size != len(y) * out.numel:
            kind = "one integer label" if y.dtype.kind in "iu" and y.ndim == 1 else f"{y.size // max(len(y), 1)} value(s)"
            raise data_error(graph, f"{which}{loss_kind} needs {out.numel} target value(s) per example (the "
                                    f"{'last layer' if not name else 'output'}'s outputs), the data has {kind} per example",
                             "for class labels use loss cross_entropy or svm")
        return y.astype(np.float32).reshape(len(y), *out.dims)
    outputs = out.features
    per_pixel = out.kind == "image"
    want = tuple(out.dims[1:]) if per_pixel else ()
    if y.ndim == len(want) + 2 and y.shape[1] == 1:  # a column of labels, or (N, 1, H, W)
        y = y[:, 0]
    if tuple(y.shape[1:]) != want:
        what = f"one integer class label per pixel, shape {want}" if per_pixel else "one integer class label per example"
        raise data_error(graph, f"{which}{loss_kind} needs {what}, the data's labels have shape {tuple(y.shape[1:])} each",
                         "one-hot labels: store y.argmax(1)")
    if y.dtype.kind == "f":
        raise data_error(graph, f"{which}{loss_kind} needs integer class labels, the data has float targets",
                         "use loss mse or l1 for regression")
    found = len(classes) if classes is not None else int(y.max()) + 1 if y.size else 0
    if y.size and y.min() < 0:
        raise data_error(graph, f"{which}labels out of range: found label {int(y.min())} (classes are 0..{outputs - 1})")
    if found != outputs and not (per_pixel and found < outputs):  # (a segmentation sample may miss a class)
        what = f"{found} classes" if classes is not None else f"labels 0..{found - 1} ({found} classes)"
        raise data_error(graph, f"{which}the data has {what}, but the {'output' if name else 'last layer'} has "
                                f"{outputs} outputs", f"set the last layer to {found} outputs")
    return y.astype(np.int64)


def tensors(split: Split, stats: dict, device) -> tuple:
    """A split as (x, y) tensors on `device`, with the preprocessing statistics `stats` applied;
    several inputs (outputs) are a Multi of tensors."""
    import torch

    from nnc.compiler.modules import Multi
    from nnc.runtime import preprocess

    def put(a):
        return torch.as_tensor(np.ascontiguousarray(a)).to(device)

    if isinstance(split.x, tuple) or isinstance(split.y, tuple):
        xs = split.x if isinstance(split.x, tuple) else (split.x,)
        ys = split.y if isinstance(split.y, tuple) else (split.y,)
        x = Multi(put(a) for a in xs) if len(xs) > 1 else put(xs[0])
        return x, Multi(put(a) for a in ys) if len(ys) > 1 else put(ys[0])
    x = preprocess.apply(stats, split.x.astype(np.float32)) if stats else split.x
    return put(x), put(split.y)


def load_splits(graph: Graph, given: Arrays | None = None) -> Splits:
    """Seeded by `data seed` (not `train seed`): the same spec gives the same splits in `train`,
    `eval` and `doctor`, and runs that differ only in their train seed share them (an ensemble).
    `given`: arrays handed over in memory, in place of the spec's data source. Unreadable images
    are dropped from their split (too many of them stop here)."""
    arrays = load_arrays(graph, given)
    n = len(arrays.x[0] if isinstance(arrays.x, tuple) else arrays.x)
    parts = split_indices(graph, n, arrays.parts)
    check_bad(graph, arrays.bad, n)
    bad = np.array([i for i, _, _ in arrays.bad], np.int64)
    parts = {k: v[~np.isin(v, bad)] if len(bad) else v for k, v in parts.items()}
    return Splits(*(Split(take(arrays.x, parts[k]), take(arrays.y, parts[k])) for k in ("train", "val", "test")),
                  arrays.classes, arrays.bad)


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
            count = int(round(fraction * len(pool)))
            out[k], at = perm[at:at + count], at + count
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
