"""The forward pass of a Graph as straight-line Python: one statement per layer, in execution
order, each value in a variable. Shared by the module nnc trains (compiler/torch_module.py, which
compiles it) and the standalone source `nnc compile` writes (compiler/python_source.py).

A chain reuses `x`: a value read only by the layer right after it lives in `x`; any other value
(a skip, a branch's start, an output) gets a variable named after its path (`layer1_block2`).
Nothing here imports torch.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Callable

from nnc.compiler.graph import Graph, LayerInfo
from nnc.compiler.layers import LAYERS

TAKEN = {"self", "torch", "nn", "x", "m", "Multi"}  # names the generated code uses itself


@dataclass(frozen=True)
class Program:
    args: tuple[str, ...]  # one parameter per input, in order
    lines: tuple[tuple[str, LayerInfo], ...]  # (statement template, the layer): see `program`
    returns: tuple[str, ...]  # the variable of each output, in order
    variables: dict[str, str]  # value (an input's name, a layer's path) -> its variable


def _identifier(text: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in text) or "v"
    if base[0].isdigit() or keyword.iskeyword(base) or base in TAKEN:
        base = f"v_{base}"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def program(graph: Graph) -> Program:
    """Which variable holds each value. Each line is (`DST = {call}`-style template, layer): the
    caller fills in the call of the layer's module (or the merge's expression) on its sources."""
    layers = list(graph.layers())
    readers: dict[str, list[int]] = {}
    for i, l in enumerate(layers):
        for s in l.sources:
            readers.setdefault(s, []).append(i)
    outputs = {v for _, v, _ in graph.outputs}
    taken: set[str] = set()
    var: dict[str, str] = {}

    def chained(value: str, at: int) -> bool:
        """Read once, by the layer right after it, and no output; or the one output, made last."""
        if value in outputs:
            return len(outputs) == 1 and at == len(layers) - 1 and value not in readers
        return readers.get(value, []) == [at + 1]

    args = []
    for name, _ in graph.inputs:
        var[name] = "x" if len(graph.inputs) == 1 and chained(name, -1) else _identifier(name, taken)
        args.append(var[name])
    lines = []
    for i, l in enumerate(layers):
        var[l.path] = "x" if chained(l.path, i) else _identifier(l.path, taken)
        lines.append((var[l.path], l))
    return Program(tuple(args), tuple(lines), tuple(var[v] for _, v, _ in graph.outputs), var)


def expression(info: LayerInfo, sources: list[str]) -> str:
    """A merge's forward expression over its sources' variables: torch.cat([...], 1), a + b."""
    return LAYERS[info.kind].expression(info.params, info.inputs, sources)


def module_ref(path: str, root: str = "self") -> str:
    """`self.layer1.block2.conv1`, with `getattr` for a part Python cannot write after a dot."""
    out = root
    for part in path.split("."):
        out = f"{out}.{part}" if part.isidentifier() and not keyword.iskeyword(part) else f"getattr({out}, {part!r})"
    return out


def statements(prog: Program, call: Callable[[LayerInfo, str, str], list[str]]) -> list[str]:
    """The body of forward(): `call(layer, source variable, destination)` writes a module
    layer's lines; merges are written here."""
    out = []
    for dst, l in prog.lines:
        srcs = [prog.variables[s] for s in l.sources]
        if l.merge:
            out.append(f"{dst} = {expression(l, srcs)}  # (B, {', '.join(map(str, l.output.dims))})")
        else:
            out += call(l, srcs[0], dst)
    return out
