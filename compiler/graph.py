"""The Graph: what shape inference makes of a Spec and every back end reads. A DAG of named
values: each layer (merges included) with the values it reads, its input and output shapes,
tensors, FLOPs and resolved initialization, in execution order; the groups (residual blocks,
block uses, named branches) as paths over them; the model's named inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from nnc.compiler.layers import LAYERS, Shape, Tensor
from nnc.compiler.spec import Spec, Use
from nnc.compiler.vocab.initializers import Dist
from nnc.compiler.vocab.registry import Params
from nnc.diagnostics import Diagnostic, Span


@dataclass(frozen=True)
class LayerInfo:
    """One node of the model, shaped: its input and output shapes, tensors and FLOPs."""

    kind: str
    name: str
    path: str  # the module path of its parameters, e.g. res1.conv3; also the name of the value it makes
    params: Params
    input: Shape  # the (first) value it reads
    output: Shape
    tensors: tuple[Tensor, ...]
    flops: int
    span: Span
    implicit: bool = False  # inserted by nnc (the flatten before a dense layer, a residual's projection)
    init: tuple[tuple[str, Dist, str], ...] = ()  # (tensor, distribution, the rule that chose it)
    sources: tuple[str, ...] = ()  # the values it reads: an input's name or an earlier layer's path
    inputs: tuple[Shape, ...] = ()  # their shapes (a merge reads several)
    trace: tuple[Use, ...] = ()  # the block uses around it, outermost first
    selectors: tuple[str, ...] = ()  # the names init / lr_mult / freeze / skip rules may use for it

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def merge(self) -> bool:
        """A merge (concat, add): no module, its forward is an expression over several values."""
        return LAYERS[self.kind].merge


@dataclass(frozen=True)
class GroupInfo:
    """A residual block, a block use or a named branch / merge: the layers whose paths start with
    `path`, from `input` to `output`."""

    kind: str  # residual | block | branch | concat | add
    name: str
    path: str
    span: Span
    label: str
    input: Shape
    output: Shape
    trace: tuple[Use, ...] = ()
    definition: Span | None = None  # a block use: its block's definition line
    proj: bool = False  # a residual block with a projection shortcut


@dataclass(frozen=True)
class Graph:
    """The shaped model: what `check` returns and the back ends read."""

    spec: Spec
    input: Shape  # what the model reads (its first input), after preprocessing
    nodes: tuple[LayerInfo, ...]  # every layer, merges included, in execution order
    output: Shape  # the first output
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False)
    inputs: tuple[tuple[str, Shape], ...] = ()  # (name, shape) of every input, in order
    outputs: tuple[tuple[str, str, Shape], ...] = ()  # (name, the value it is, shape) of every output
    groups: tuple[GroupInfo, ...] = ()

    def layers(self) -> Iterator[LayerInfo]:
        """Every layer, merges included, in execution order (shortcut projections last in their block)."""
        yield from self.nodes

    def modules(self) -> Iterator[LayerInfo]:
        """The layers that are torch modules (all but the merges)."""
        return (l for l in self.nodes if not l.merge)

    def find(self, name: str) -> LayerInfo | GroupInfo | None:
        """The layer or group at path `name`, or named `name` in the model block itself."""
        for n in (*self.nodes, *self.groups):
            if n.path == name:
                return n
        for n in self.nodes:
            if n.name == name and name in n.selectors:
                return n
        return next((g for g in self.groups if g.name == name and not g.trace), None)

    def selectable(self) -> set[str]:
        """Every name a rule outside the model block (init, lr_mult, freeze, skip) may give."""
        return {s for l in self.nodes for s in l.selectors}

    @property
    def n_params(self) -> int:
        return sum(l.n_params for l in self.layers())

    @property
    def flops(self) -> int:
        return sum(l.flops for l in self.layers())

    @property
    def classes(self) -> int:
        return self.output.features

    @property
    def several(self) -> bool:
        """Several inputs or outputs: batches and scores are tuples (compiler/modules.Multi)."""
        return len(self.inputs) > 1 or len(self.outputs) > 1


def residuals(graph: Graph) -> Iterator[GroupInfo]:
    """Every residual block, nested ones included."""
    return (g for g in graph.groups if g.kind == "residual")
