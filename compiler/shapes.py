"""Spec -> Graph: each layer's input and output shapes, tensors, parameter count, FLOPs and
resolved initialization, walking the model's values in execution order. The errors of the pass
are collected, so that one bad layer does not hide the next: inference goes on past it as if it
were the identity (a merge: as if it passed its first input on)."""

from __future__ import annotations

from dataclasses import replace

from nnc.compiler.graph import GroupInfo, Graph, LayerInfo
from nnc.compiler.layers import LAYERS, Shape, ShapeError, Tensor
from nnc.compiler.layers.conv import Conv
from nnc.compiler.layers.norm import BatchNorm
from nnc.compiler.model_block import related, selectors
from nnc.compiler.spec import InitRule, LayerNode, Spec
from nnc.compiler.vocab.initializers import FIXED, Dist, resolve
from nnc.compiler.vocab.preprocess import output_dims
from nnc.diagnostics import Collector


def input_shape(spec: Spec) -> Shape:
    """What the model reads: the spec's input after preprocessing (PCA may shorten a vector)."""
    x = spec.model.input
    if x.kind == "vector":
        return Shape("vector", output_dims([(c.kind, c.params) for c in spec.data.preprocess], x.dims))
    return x


def infer(spec: Spec, out: Collector) -> Graph:
    """The shaped graph of `spec`; errors and warnings go to `out`."""
    p = _Inference(spec, out)
    m = spec.model
    inputs = [(i.name, input_shape(spec) if k == 0 else i.shape) for k, i in enumerate(m.inputs)]
    p.values.update(inputs)
    for n in m.body:
        p.node(n)
    outputs = tuple((o.name, o.source, p.values[o.source]) for o in m.outputs if o.source in p.values)
    groups = tuple(GroupInfo(g.kind, g.name, g.path, g.span, g.label, p.values.get(g.input, inputs[0][1]),
                             p.values.get(g.output, inputs[0][1]), g.trace, g.definition,
                             g.label == "residual project") for g in m.groups)
    first_out = outputs[0][2] if outputs else inputs[0][1]
    return Graph(spec, inputs[0][1], tuple(p.infos), first_out, (), tuple(inputs), outputs, groups)


class _Inference:
    def __init__(self, spec: Spec, out: Collector):
        self.spec = spec
        self.out = out
        self.values: dict[str, Shape] = {}  # value (an input's name, a layer's path) -> its shape
        self.infos: list[LayerInfo] = []
        self.order = self._activation_order(spec.model.body)
        self.residuals = {g.path for g in spec.model.groups if g.kind == "residual"}

    # which activation follows each layer (through norms, dropout and merges), for `before relu` rules
    @staticmethod
    def _activation_order(body: tuple[LayerNode, ...]) -> dict[str, str | None]:
        """The layer a value flows into: the next one in execution order when it reads the value
        (a chain, the end of a residual block), else its only reader."""
        readers: dict[str, list[int]] = {}
        for i, n in enumerate(body):
            for s in n.sources:
                readers.setdefault(s, []).append(i)

        known: dict[int, str | None] = {}  # (every layer on a walk shares its answer: one walk per chain)

        def after(i: int) -> str | None:
            walked, found = [], None
            while i not in known and len(walked) < len(body):
                walked.append(i)
                r = readers.get(body[i].where, [])
                nxt = i + 1 if i + 1 in r else r[0] if len(r) == 1 else None
                if nxt is None:
                    break
                d = LAYERS[body[nxt].kind]
                if d.activation:
                    found = body[nxt].kind
                    break
                if not d.transparent:
                    break
                i = nxt
            else:
                found = known.get(i)
            known.update(dict.fromkeys(walked, found))
            return found

        return {n.where: after(i) for i, n in enumerate(body)}

    def error(self, n: LayerNode, span, message: str, help: str | None = None) -> None:
        definition = n.span if n.trace else None
        self.out.error(span, message, help, related(n.trace, span, definition))

    def node(self, n: LayerNode) -> None:
        xs = tuple(self.values.get(s) for s in n.sources)
        if None in xs:  # an earlier error left it without input: nothing more to say here
            return
        if n.project:
            shape, path = self.projection(n, xs[1])
            xs, n = (xs[0], shape), replace(n, sources=(n.sources[0], path or n.sources[1]))
        self.layer(n, xs if LAYERS[n.kind].merge else xs[:1])

    def layer(self, n: LayerNode, xs: tuple[Shape, ...], implicit: bool = False) -> Shape | None:
        x = xs[0]
        sources = n.sources
        parent = n.where.rsplit(".", 1)[0] + "." if "." in n.where else ""
        if n.kind == "dense" and x.kind == "image":  # automatic flattening, stated in the docs
            flat = LAYERS["flatten"]
            res = flat.infer(flat.params(), x)
            path = f"{parent}flatten_{n.name}"
            self.infos.append(LayerInfo("flatten", f"flatten_{n.name}", path, flat.params(), x, res.out, (), 0, n.span,
                                        implicit=True, sources=sources, inputs=(x,), trace=n.trace,
                                        selectors=n.selectors))
            x, xs, sources = res.out, (res.out,), (path,)
        d = LAYERS[n.kind]
        try:
            res = d.infer(n.params, xs if d.merge else x)
        except ShapeError as e:
            span = n.spans.get(e.field, n.span) if e.field else n.span
            if n.where in self.residuals:  # the add closing a residual block
                e = ShapeError(f"residual shapes do not match: the block maps {self.values[n.sources[1]]} to {x}",
                               help="write `residual project { ... }` for a 1x1 convolution shortcut, "
                                    "or keep the block's output shape equal to its input")
            self.error(n, span, f"{n.name}: {e.message}", e.help)
            self.values[n.where] = x  # keep going as if it were the identity, to find later errors too
            return None
        for fld, msg in res.warnings:
            span = n.spans.get(fld, n.span) if fld else n.span
            self.out.warn(span, f"{n.name}: {msg}", related=related(n.trace, span, n.span if n.trace else None))
        init = tuple(self._init(n, t) for t in res.tensors)
        self.infos.append(LayerInfo(n.kind, n.name, n.where, n.params, x, res.out, res.tensors, res.flops, n.span,
                                    implicit, init, sources, xs, n.trace, n.selectors))
        self.values[n.where] = res.out
        return res.out

    def _init(self, n: LayerNode, t: Tensor) -> tuple[str, Dist, str]:
        if t.role in FIXED:
            return t.name, FIXED[t.role], "fixed"
        target = "bias" if t.role == "bias" else "weights"
        before = self.order.get(n.where)
        best: tuple[int, InitRule] | None = None
        own = {n.where} | ({n.name} & set(n.selectors))  # the layer itself, by path or by its bare name
        for rule in self.spec.init:
            if rule.target != target:
                continue
            rank = 3 if rule.layer in own else 2 if rule.layer and rule.layer in n.selectors else \
                1 if rule.before and rule.before == before and not rule.layer else \
                0 if not rule.layer and not rule.before else -1
            if rank >= 0 and (best is None or rank >= best[0]):
                best = (rank, rule)
        rule = best[1]
        kind, params = rule.init.kind, rule.init.params
        if kind == "auto" and t.role == "embedding":
            return t.name, Dist("normal", 1.0), "auto (embedding)"
        auto = LAYERS[n.kind].init_self or (before and LAYERS[before].init_before) or "xavier"
        dist = resolve(kind, params, t.fan_in, t.fan_out, auto)
        return t.name, dist, kind if kind != "auto" else f"auto: {auto}"

    def projection(self, n: LayerNode, x: Shape) -> tuple[Shape, str | None]:
        """A `residual project` block's shortcut, a 1x1 convolution without bias and batchnorm,
        from the block's input `x` to the body's output shape: (its output shape, its path)."""
        y = self.values[n.sources[0]]
        if x.kind != "image" or y.kind != "image":
            self.error(n, n.span, f"{n.name}: a projection shortcut needs images, got {x} -> {y}")
            return x, None
        (_, h, w), (c2, h2, w2) = x.dims, y.dims
        sh, sw = _shortcut_stride(h, h2), _shortcut_stride(w, w2)
        if sh is None or sw is None:
            self.error(n, n.span, f"{n.name}: no 1x1 stride maps {h}x{w} to {h2}x{w2}")
            return x, None
        conv = LayerNode("conv", "proj", Conv(filters=c2, kernel=1, stride=(sh, sw), bias=False), n.span,
                         path=f"{n.where}.proj", sources=(n.sources[1],), trace=n.trace,
                         selectors=selectors(f"{n.where}.proj", n.trace))
        bn = LayerNode("batchnorm", "proj_bn", BatchNorm(), n.span, path=f"{n.where}.proj_bn", sources=(conv.where,),
                       trace=n.trace, selectors=selectors(f"{n.where}.proj_bn", n.trace))
        got = self.layer(conv, (x,))
        got = self.layer(bn, (got,)) if got else None
        return (got, bn.where) if got else (x, None)


def _shortcut_stride(size: int, out: int) -> int | None:
    """The smallest stride s of a 1x1 convolution (no padding) that maps `size` to `out`:
    floor((size - 1) / s) + 1 = out, so 7 -> 4 at stride 2, as the body's 3x3 stride-2 conv does.
    Computed, not searched (sizes go up to 2**63): m // s <= k holds from s = m // (k + 1) + 1 on."""
    m, k = size - 1, out - 1
    if not 0 <= k <= m:
        return None
    s = m // (k + 1) + 1
    return s if m // s == k else None
