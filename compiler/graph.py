"""The Graph: what shape inference makes of a Spec and every back end reads. Each layer with its
input and output shape, tensors, FLOPs and resolved initialization, in execution order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from nnc.compiler.layers import Shape, Tensor
from nnc.compiler.spec import Spec
from nnc.compiler.vocab.initializers import Dist
from nnc.compiler.vocab.registry import Params
from nnc.diagnostics import Diagnostic, Span


@dataclass(frozen=True)
class LayerInfo:
    kind: str
    name: str
    path: str  # the module path of its parameters, e.g. res1.conv3
    params: Params
    input: Shape
    output: Shape
    tensors: tuple[Tensor, ...]
    flops: int
    span: Span
    implicit: bool = False  # inserted by nnc (the flatten before a dense layer)
    init: tuple[tuple[str, Dist, str], ...] = ()  # (tensor, distribution, the rule that chose it)

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors)


@dataclass(frozen=True)
class ResidualInfo:
    name: str
    path: str
    input: Shape
    output: Shape
    body: tuple["Info", ...]
    proj: tuple[LayerInfo, LayerInfo] | None  # 1x1 conv + batchnorm shortcut
    span: Span

    @property
    def flops(self) -> int:  # the addition
        return self.output.numel


Info = LayerInfo | ResidualInfo


@dataclass(frozen=True)
class Graph:
    spec: Spec
    input: Shape  # what the model reads, after preprocessing
    nodes: tuple[Info, ...]
    output: Shape
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False)

    def layers(self) -> Iterator[LayerInfo]:
        """Every layer with its own module, in execution order (shortcut projections last in their block)."""
        def walk(nodes):
            for n in nodes:
                if isinstance(n, ResidualInfo):
                    yield from walk(n.body)
                    if n.proj:
                        yield from n.proj
                else:
                    yield n
        yield from walk(self.nodes)

    def find(self, name: str) -> Info | None:
        def walk(nodes):
            for n in nodes:
                if n.name == name:
                    return n
                if isinstance(n, ResidualInfo):
                    hit = walk(n.body) or next((p for p in n.proj or () if p.name == name), None)
                    if hit:
                        return hit
            return None
        return walk(self.nodes)

    @property
    def n_params(self) -> int:
        return sum(l.n_params for l in self.layers())

    @property
    def flops(self) -> int:
        total = sum(l.flops for l in self.layers())

        def adds(nodes):
            return sum(n.flops + adds(n.body) for n in nodes if isinstance(n, ResidualInfo))
        return total + adds(self.nodes)

    @property
    def classes(self) -> int:
        return self.output.features


def residuals(nodes) -> Iterator[ResidualInfo]:
    """Every residual block among `nodes`, nested ones included."""
    for n in nodes:
        if isinstance(n, ResidualInfo):
            yield n
            yield from residuals(n.body)
