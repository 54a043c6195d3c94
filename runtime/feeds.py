"""The training data as batches on the device, from memory or streamed from disk, and sharded
over the training processes.

`open_data` follows the spec's data plan (compiler/data_plan.py): small data is loaded whole,
preprocessed once and kept on the device (`MemoryFeed`: a batch is an index into a tensor, the
fast path that makes small models train at hand-written speed); data larger than memory is read
by worker processes (`StreamFeed`, runtime/stream.py) and preprocessed on the device batch by
batch. Both take an epoch as a list of global batches (positions in the split) with this
process's share of each, so the two paths, and any number of processes, see the same examples
in the same order. Augmentation comes before preprocessing on both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from nnc.compiler.data_plan import DataPlan, located, plan
from nnc.compiler.graph import Graph
from nnc.compiler.modules import Multi
from nnc.compiler.vocab.augment import augment_batch, draws
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.sources import SOURCES, array_name, label_ids, list_images, np_load
from nnc.diagnostics import NncError
from nnc.runtime import preprocess, stream
from nnc.runtime.data import Split, check_bad, data_error, layout_of, load_splits, split_indices, targets, value_problem
from nnc.runtime.distributed import World, all_sum, gather_lists

EVAL_BATCH = 1024  # examples per evaluation batch held in memory


def _prepare(x: torch.Tensor, stats: dict, channels_last: bool) -> torch.Tensor:
    """A raw batch on the device -> float32, preprocessed, in the model's memory format."""
    x = x.float() if x.dtype == torch.uint8 else x
    if stats:
        x = preprocess.apply(stats, x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class MemoryFeed:
    """A split held on the device: preprocessed once, unless augmentation (which comes first) needs
    the raw values."""

    def __init__(self, split: Split, stats: dict, dev: torch.device, channels_last: bool, steps: list,
                 pixel_max: float | None):
        self.steps, self.pixel_max, self.channels_last = steps, pixel_max, channels_last
        self.stats = {k: torch.as_tensor(v, device=dev) for k, v in stats.items()} if steps else {}

        def put(a):  # (several inputs or outputs: a Multi of them, neither preprocessed nor augmented)
            return Multi(put(t) for t in a) if isinstance(a, tuple) else torch.as_tensor(np.ascontiguousarray(a)).to(dev)

        self.x = put(split.x if steps or not stats else preprocess.apply(stats, split.x.astype(np.float32)))
        if channels_last and isinstance(self.x, torch.Tensor) and self.x.dim() == 4:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = put(split.y)
        self.n = len(self.x)
        self.index_device = dev  # epoch permutations index the data where it is

    def batches(self, epoch: int, plan: list, gen: torch.Generator | None):
        for gb, lo, hi in plan:
            idx = gb[lo:hi]
            xb = self.x[idx]
            if self.steps:
                u = torch.rand((len(gb), draws(self.steps)), generator=gen, device=gen.device)[lo:hi]
                xb = _prepare(augment_batch(xb, self.steps, u.to(xb.device), self.pixel_max), self.stats,
                              self.channels_last)
            yield xb, self.y[idx]

    def eval_batches(self, world: World, batch: int = EVAL_BATCH, raw: bool = False):
        lo, hi = world.shard(self.n)
        for i in range(lo, hi, batch):
            j = min(i + batch, hi)
            xb = self.x[i:j]
            yield (_prepare(xb, self.stats, self.channels_last) if self.steps and not raw else xb), self.y[i:j]

    def problems(self) -> tuple[list, str | None]:
        return [], None


class StreamFeed:
    """A split read by worker processes, batch by batch; unreadable examples are collected for
    the run to count and log (`problems`). The splits of a source share one DataLoader, so one
    set of workers (kept between epochs) serves training, validation and the statistics pass:
    an item says which examples to read and whether to augment them (epoch < 0: not)."""

    def __init__(self, reader: tuple, index: np.ndarray, dev: torch.device, channels_last: bool):
        self.loader, self.items = reader
        self.index, self.dev, self.channels_last = index, dev, channels_last
        self.stats: dict = {}
        self.n = len(index)
        self.index_device = torch.device("cpu")  # the workers read by index
        self.bad: list = []
        self.fatal: str | None = None

    def _run(self, items: list, raw: bool = False):
        self.items.items = items
        for x, y, bad in self.loader:
            for entry in bad:
                if entry[0] == stream.FATAL:
                    self.fatal = self.fatal or f"{entry[1]}: {entry[2]}"
                else:
                    self.bad.append(entry)
            if not len(y):
                continue
            if raw:
                yield x, y
            else:
                yield _prepare(x.to(self.dev, non_blocking=True), self.stats, self.channels_last), \
                    y.to(self.dev, non_blocking=True)

    def batches(self, epoch: int, plan: list, gen=None):
        return self._run([(epoch, self.index[gb[lo:hi].numpy()]) for gb, lo, hi in plan])

    def eval_batches(self, world: World, batch: int, raw: bool = False):
        lo, hi = world.shard(self.n)
        return self._run([(-1, self.index[i:min(i + batch, hi)]) for i in range(lo, hi, batch)], raw)

    def read(self, index: np.ndarray, batch: int):
        """Raw batches of the given source examples (every process reads the same)."""
        return self._run([(-1, index[i:i + batch]) for i in range(0, len(index), batch)], raw=True)

    def problems(self) -> tuple[list, str | None]:
        """The unreadable examples met since the last call, and a fatal problem, if any."""
        bad, self.bad = self.bad, []
        return bad, self.fatal


@dataclass
class Data:
    train: MemoryFeed | StreamFeed
    val: MemoryFeed | StreamFeed
    test: MemoryFeed | StreamFeed
    stats: dict  # preprocessing statistics (numpy), stored in checkpoints
    classes: list[str] | None
    plan: DataPlan
    n_source: int  # examples in the source, unreadable ones included (what max_bad is a share of)
    bad: list = field(default_factory=list)  # unreadable examples found while loading


def open_data(graph: Graph, world: World, dev: torch.device, stats: dict | None, channels_last: bool,
              batch: int, given=None) -> Data:
    """The splits as feeds, with preprocessing statistics: `stats` (a resumed run's own), else
    fitted on the training split (streamed data: summed over every process's share). `given`:
    arrays handed over in memory by the Python API, or a torch Dataset (stream.UserDataset) to
    stream, in place of the spec's source."""
    spec = graph.spec
    workers = spec.data.workers if spec.data.workers is not None else stream.default_workers(world.local_size)
    if isinstance(given, stream.UserDataset):
        p = DataPlan("stream", f"a torch Dataset of {len(given.dataset):,} examples, "
                               f"{f'{workers} worker processes' if workers else 'read in this process'}", None)
    else:
        p = plan(spec, world.local_size) if given is None else DataPlan("memory", "arrays handed over by the caller", None)
    steps = stream.aug_steps(spec)
    if p.cache == "memory":
        splits = load_splits(graph, given)
        stats = stats if stats is not None else preprocess.fit_for(spec, splits.train.x)
        pixel_max = SOURCES[spec.data.source.kind].pixel_max
        feeds = [MemoryFeed(sp, stats, dev, channels_last, st, pixel_max)
                 for sp, st in ((splits.train, steps), (splits.val, []), (splits.test, []))]
        n = len(splits.train) + len(splits.val) + len(splits.test) + len(splits.bad)
        return Data(*feeds, stats, splits.classes, p, n, list(splits.bad))
    dataset, n, parts, classes = _stream_source(graph, steps) if given is None else _stream_dataset(graph, given, steps)
    idx = split_indices(graph, n, parts)
    reader = stream.loader(dataset, workers, dev.type == "cuda", persistent=True)
    data = Data(*(StreamFeed(reader, idx[k], dev, channels_last) for k in ("train", "val", "test")), {}, classes, p, n)
    data.stats = stats if stats is not None else streamed_stats(graph, data, world, batch)
    for f in (data.train, data.val, data.test):
        f.stats = {k: torch.as_tensor(v, device=dev) for k, v in data.stats.items()}
    return data


def training_sample(graph: Graph, given=None, limit: int = 4096) -> Split:
    """Raw training examples in memory for the doctor: the whole training split of data held in
    memory; of streamed data, the first `limit` of the training split's (seeded) order, read by
    worker processes, so the doctor never decodes a data set larger than memory."""
    if not isinstance(given, stream.UserDataset) and (given is not None or plan(graph.spec).cache == "memory"):
        return load_splits(graph, given).train
    return split_samples(graph, {"train": limit}, given)["train"]


def split_samples(graph: Graph, limits: dict[str, int], given=None) -> dict[str, Split]:
    """The first limits[k] raw examples of each split k of streamed data, in memory, read by one
    set of workers (raw values as float32, as in memory). `given`: a torch Dataset handed over by
    the Python API (stream.UserDataset), in place of the spec's source."""
    loader, idx = _stream_reader(graph, given)
    out = {}
    for k, limit in limits.items():
        batches = list(_read(graph, loader, idx[k][:limit], 256))
        if not batches:
            out[k] = Split(np.zeros((0, *graph.spec.model.input.dims), np.float32), np.zeros(0, np.int64))
            continue
        xs, ys = zip(*batches)
        x = np.concatenate(xs)
        out[k] = Split(x.astype(np.float32) if x.dtype == np.uint8 else x, np.concatenate(ys))
    return out


def raw_split(graph: Graph, split: str, batch: int = EVAL_BATCH, limit: int | None = None):
    """One split's raw (not preprocessed) examples as numpy batches, in the split's order: sliced
    from memory, or read by worker processes when the data is streamed (unreadable ones skipped,
    too many of them an error at the end)."""
    if plan(graph.spec).cache == "memory":
        part = getattr(load_splits(graph), split)
        for i in range(0, min(len(part), limit or len(part)), batch):
            yield part.x[i:i + batch], part.y[i:i + batch]
        return
    loader, idx = _stream_reader(graph, None)
    yield from _read(graph, loader, idx[split][:limit], batch)


def _stream_reader(graph: Graph, given):
    """The streamed source (or Dataset) as a DataLoader without augmentation, and its splits' indices."""
    spec = graph.spec
    dataset, n, parts, _ = _stream_source(graph, []) if given is None else _stream_dataset(graph, given, [])
    workers = spec.data.workers if spec.data.workers is not None else stream.default_workers(1)
    return stream.loader(dataset, workers, False, persistent=False), split_indices(graph, n, parts)


def _read(graph: Graph, loader, idx: np.ndarray, batch: int):
    feed = StreamFeed(loader, idx, torch.device("cpu"), False)
    for x, y in feed.read(idx, batch):
        yield x.numpy(), y.numpy()
    check_bad(graph, feed.bad, len(idx))


def _stream_source(graph: Graph, steps: list):
    """(Dataset, examples, parts, classes) of a streamable source; `steps`: the augmentation."""
    spec = graph.spec
    src, params, dims, seed = spec.data.source, located(spec), spec.model.input.dims, spec.train.seed
    if src.kind == "imagefolder":
        ls = list_images(params)
        y = targets(graph, np.array(ls.labels, np.int64), ls.classes)
        return stream.ImageFiles(ls.files, y, dims, steps, seed), len(ls.files), ls.parts, ls.classes
    path, key = (params.path, array_name(params.x, "x")) if src.kind == "npz" else (params.x, None)
    x = stream.open_rows(path, key)
    if src.kind == "npz":
        with np_load(params.path, "npz") as f:
            y = f[array_name(params.y, "y")]
    else:
        y = np_load(params.y, "npy")
    y, classes = label_ids(np.asarray(y))
    if len(x) != len(y):
        raise data_error(graph, f"{src.kind}: {len(x)} inputs but {len(y)} labels")
    if len(x) < 3:
        raise data_error(graph, f"{src.kind}: only {len(x)} examples")
    lay = layout_of(graph, tuple(x.shape[1:]))
    y = targets(graph, y, classes)
    check = functools.partial(value_problem, graph)
    tokens = spec.model.input.kind == "tokens"
    return stream.ArrayRows(path, key, y, lay, check, steps, seed, tokens), len(x), None, classes


def _stream_dataset(graph: Graph, given: stream.UserDataset, steps: list):
    """(Dataset, examples, parts, classes) of a torch Dataset handed over by the Python API. Its
    first item, read here, gives the layout and is checked, so that a Dataset that does not fit
    the model stops before any worker starts; the workers check every other item."""
    spec = graph.spec
    if graph.several:
        raise data_error(graph, "a Dataset handed over gives one x and one y: a model of several inputs or outputs "
                                "reads them from an npz of named arrays")
    n = len(given.dataset)
    if n < 3:
        raise data_error(graph, f"the Dataset: only {n} examples")
    try:
        x, y = stream.pair(given.dataset[0], 0)
    except NncError as e:
        raise data_error(graph, f"the Dataset: {e}", "return (x, y) from __getitem__: an input and its label "
                                                     "(arrays, tensors or numbers)") from None
    lay = layout_of(graph, tuple(x.shape))
    label = functools.partial(_batch_targets, graph, given.classes)
    label(y[None])
    problem = value_problem(graph, lay.apply(x[None]))
    if problem:
        raise data_error(graph, f"the Dataset: item 0: {problem}")
    check = functools.partial(value_problem, graph)
    tokens = spec.model.input.kind == "tokens"
    rows = stream.DatasetRows(given.dataset, tuple(x.shape), label, lay, check, steps, spec.train.seed, tokens)
    return rows, n, None, given.classes


def dataset_feed(graph: Graph, given: stream.UserDataset, dev: torch.device, stats: dict) -> StreamFeed:
    """All of a torch Dataset handed over by the Python API as one streamed feed (for scoring)."""
    rows, n, _, _ = _stream_dataset(graph, given, [])
    workers = graph.spec.data.workers if graph.spec.data.workers is not None else stream.default_workers(1)
    feed = StreamFeed(stream.loader(rows, workers, dev.type == "cuda", persistent=False), np.arange(n), dev, False)
    feed.stats = {k: torch.as_tensor(v, device=dev) for k, v in stats.items()}
    return feed


def _batch_targets(graph: Graph, classes: list[str] | None, y: np.ndarray) -> np.ndarray:
    """`targets` of a batch of a Dataset's labels. A batch need not hold every class, so the
    classes are the model's outputs (or the Dataset's `classes`, checked against them), and a
    label must lie among them."""
    n = graph.output.features
    if LOSSES[graph.spec.loss.kind].classification and y.dtype.kind in "iub" and y.size and int(y.max()) >= n:
        raise data_error(graph, f"labels out of range: found label {int(y.max())} (classes are 0..{n - 1})")
    return targets(graph, y, classes if classes is not None else [str(i) for i in range(n)])


def streamed_stats(graph: Graph, data: Data, world: World, batch: int) -> dict:
    """The preprocessing statistics in one pass over the training split (each process reads its
    share; the sums are added up), PCA's covariance from a sample every process reads alike."""
    spec = graph.spec
    steps = preprocess.steps_of(spec)
    if not steps:
        return {}
    m = preprocess.Moments(spec.model.input.dims)
    for x, _ in data.train.eval_batches(world, batch, raw=True):
        m.add(x.numpy())
    sums = all_sum(torch.tensor(np.concatenate([[m.n], m.s1.ravel(), m.s2.ravel()]), dtype=torch.float64,
                                device=data.train.dev if world.size > 1 else "cpu"), world).cpu().numpy()
    size = m.s1.size
    m.n, m.s1, m.s2 = int(sums[0]), sums[1:1 + size].reshape(m.s1.shape), sums[1 + size:].reshape(m.s1.shape)
    bad, _ = data.train.problems()
    data.bad += gather_lists(bad, world)
    sample = None
    if preprocess.needs_sample(steps):
        sample = np.concatenate([x.numpy() for x, _ in data.train.read(data.train.index[:preprocess.PCA_SAMPLE], batch)])
        data.train.problems()  # met (and counted) in the pass above already
    return preprocess.fit_moments(steps, m, sample)
