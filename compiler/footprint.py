"""How much memory a spec needs, estimated from the shaped graph before anything is allocated
(no torch): `nnc show` prints it, `nnc check` warns past the machine's memory, and train,
doctor and export refuse past the device's memory with the estimate in the message.

In float32 (4 bytes a value; token ids 8): the weights; per example, every layer's output (what
autograd keeps for the backward pass, the input included); training adds the gradients, the
optimizer's state (OptimizerDef.state_copies), the EMA copy, twice the activations of a batch
(the saved outputs and their gradients) and the data set held in memory twice (the arrays read
and the tensors made from them) where its size is known without decoding it (SourceDef.extent)
and it is not streamed from disk (compiler/data_plan.py). An estimate: framework workspaces and
recurrent layers' gates are not in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnc.compiler.data_plan import DataPlan, size, try_plan  # (size: also imported from here)
from nnc.compiler.graph import Graph
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.sources import SOURCES

FLOAT = 4


@dataclass(frozen=True)
class Footprint:
    """The memory estimate of training (compiler/footprint.py): its parts, in bytes."""

    weights: int  # bytes
    activations: int  # bytes per example, forward
    optimizer: int  # bytes: gradients, optimizer state, EMA copy
    batch: int  # examples per training step (all of the training split for L-BFGS)
    data: int | None  # bytes of the data set in memory; None: read from files, not known here
    examples: int | None
    optimizer_name: str
    streamed: bool = False  # the data is read from disk batch by batch: not held in memory

    @property
    def training_per_example(self) -> int:
        return 2 * self.activations

    @property
    def training(self) -> int:
        """Bytes to train: weights, gradients and optimizer state, a batch's activations, the data."""
        return self.weights + self.optimizer + self.batch * self.training_per_example + (self.data or 0)

    def inference(self, batch: int = 1) -> int:
        return self.weights + batch * self.activations

    def training_parts(self) -> str:
        """What `training` adds up, in words."""
        data = "the data set streamed from disk (not held in memory)" if self.streamed else \
            f"the data set {size(self.data)} ({self.examples:,} examples, twice)" if self.data is not None \
            else "the data set (its size is not known before it is read: not counted)"
        return (f"weights {size(self.weights)}, gradients and {self.optimizer_name} state {size(self.optimizer)}, "
                f"activations of a batch of {self.batch:,} {size(self.batch * self.training_per_example)}, {data}")


def estimate(graph: Graph, way: DataPlan | str | None = None) -> Footprint:
    """`way`: the data plan (data_plan.try_plan) when the caller has made it. Without it the data
    set is counted only for sources that read no file (planning one may list a large folder:
    `nnc check`, which runs on every keystroke in an editor, reads no data)."""
    spec = graph.spec
    raw = spec.model.input
    weights = graph.n_params * FLOAT
    activations = (graph.input.numel + sum(l.output.numel for l in graph.layers())) * FLOAT
    opt = OPTIMIZERS[spec.optimizer.kind]
    copies = 1 + opt.state_copies(spec.optimizer.params) + (1 if spec.train.ema else 0)
    if way is None and not SOURCES[spec.data.source.kind].paths:
        way = try_plan(spec)
    way = way if isinstance(way, DataPlan) else None  # (a message: the data cannot be read yet)
    examples = way.extent.n if way and way.extent else None
    streamed = way is not None and way.cache == "stream"
    n_train = max(1, examples - round(spec.data.test * examples) - round(spec.data.val * examples)) \
        if examples else None
    batch = (n_train or spec.train.batch) if opt.full_batch else min(spec.train.batch, n_train or spec.train.batch)
    per_value = 8 if raw.kind == "tokens" else FLOAT
    data = 0 if streamed else 2 * examples * raw.numel * per_value if examples is not None else None
    return Footprint(weights, activations, copies * weights, batch, data, examples, spec.optimizer.kind, streamed)


def physical_memory() -> int | None:
    """Bytes of memory this process may use: the machine's RAM, or its cgroup's limit when lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total
