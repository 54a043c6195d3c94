"""Spec -> Graph: each layer's input and output shape, tensors, parameter count, FLOPs and
resolved initialization. The errors of the pass are collected, so that one bad layer does not
hide the next: inference goes on past it as if it were the identity."""

from __future__ import annotations

from nnc.compiler.graph import Graph, Info, LayerInfo, ResidualInfo
from nnc.compiler.layers import LAYERS, Shape, ShapeError, Tensor
from nnc.compiler.layers.conv import Conv
from nnc.compiler.layers.norm import BatchNorm
from nnc.compiler.spec import InitRule, LayerNode, ResidualNode, Spec
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
    x = input_shape(spec)
    nodes, y = p.nodes(spec.model.body, x)
    return Graph(spec, x, tuple(nodes), y)


class _Inference:
    def __init__(self, spec: Spec, out: Collector):
        self.spec = spec
        self.out = out
        self.order = self._activation_order(spec.model.body)

    # which activation follows each layer (through norms and dropout), for `before relu` rules
    def _activation_order(self, body) -> dict[str, str | None]:
        flat: list[LayerNode] = []

        def walk(nodes):
            for n in nodes:
                if isinstance(n, ResidualNode):
                    walk(n.body)
                else:
                    flat.append(n)
        walk(body)
        nxt: dict[str, str | None] = {}
        following = None
        for n in reversed(flat):
            nxt[n.name] = following
            if LAYERS[n.kind].activation:
                following = n.kind
            elif not LAYERS[n.kind].transparent:
                following = None
        return nxt

    def layer(self, n: LayerNode, x: Shape, prefix: str) -> tuple[list[LayerInfo], Shape]:
        infos: list[LayerInfo] = []
        if n.kind == "dense" and x.kind == "image":  # automatic flattening, stated in the docs
            flat = LAYERS["flatten"]
            res = flat.infer(flat.params(), x)
            infos.append(LayerInfo("flatten", f"flatten_{n.name}", prefix + f"flatten_{n.name}", flat.params(), x,
                                   res.out, (), 0, n.span, implicit=True))
            x = res.out
        d = LAYERS[n.kind]
        try:
            res = d.infer(n.params, x)
        except ShapeError as e:
            span = n.spans.get(e.field, n.span) if e.field else n.span
            self.out.error(span, f"{n.name}: {e.message}", e.help)
            return infos, x  # keep going as if it were the identity, to find later errors too
        for fld, msg in res.warnings:
            self.out.warn(n.spans.get(fld, n.span) if fld else n.span, f"{n.name}: {msg}")
        init = tuple(self._init(n, t, prefix) for t in res.tensors)
        infos.append(LayerInfo(n.kind, n.name, prefix + n.name, n.params, x, res.out, res.tensors, res.flops,
                               n.span, init=init))
        return infos, res.out

    def _init(self, n: LayerNode, t: Tensor, prefix: str = "") -> tuple[str, Dist, str]:
        if t.role in FIXED:
            return t.name, FIXED[t.role], "fixed"
        target = "bias" if t.role == "bias" else "weights"
        before = self.order.get(n.name)
        best: tuple[int, InitRule] | None = None
        blocks = prefix.split(".")[:-1]  # the residual blocks around the layer: a rule naming one covers it
        for rule in self.spec.init:
            if rule.target != target:
                continue
            rank = 3 if rule.layer == n.name else 2 if rule.layer and rule.layer in blocks else \
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

    def nodes(self, body, x: Shape, prefix: str = "") -> tuple[list[Info], Shape]:
        out: list[Info] = []
        for n in body:
            if isinstance(n, ResidualNode):
                info, x = self.residual(n, x, prefix)
                out.append(info)
            else:
                infos, x = self.layer(n, x, prefix)
                out += infos
        return out, x

    def residual(self, n: ResidualNode, x: Shape, prefix: str) -> tuple[ResidualInfo, Shape]:
        path = prefix + n.name + "."
        body, y = self.nodes(n.body, x, path)
        proj = None
        if n.project:
            if x.kind != "image" or y.kind != "image":
                self.out.error(n.span, f"{n.name}: a projection shortcut needs images, got {x} -> {y}")
            else:
                (_, h, w), (c2, h2, w2) = x.dims, y.dims
                sh, sw = _shortcut_stride(h, h2), _shortcut_stride(w, w2)
                if sh is None or sw is None:
                    self.out.error(n.span, f"{n.name}: no 1x1 stride maps {h}x{w} to {h2}x{w2}")
                else:
                    conv = LayerNode("conv", "proj", Conv(filters=c2, kernel=1, stride=(sh, sw), bias=False), n.span)
                    bn = LayerNode("batchnorm", "proj_bn", BatchNorm(), n.span)
                    pc, _ = self.layer(conv, x, path)
                    pb, _ = self.layer(bn, y, path)
                    proj = (pc[0], pb[0])
        elif x != y:
            self.out.error(n.span, f"{n.name}: residual shapes do not match: the block maps {x} to {y}",
                           "write `residual project { ... }` for a 1x1 convolution shortcut, "
                           "or keep the block's output shape equal to its input")
        return ResidualInfo(n.name, prefix + n.name, x, y, tuple(body), proj, n.span), y


def _shortcut_stride(size: int, out: int) -> int | None:
    """The smallest stride s of a 1x1 convolution (no padding) that maps `size` to `out`:
    floor((size - 1) / s) + 1 = out, so 7 -> 4 at stride 2, as the body's 3x3 stride-2 conv does.
    Computed, not searched (sizes go up to 2**63): m // s <= k holds from s = m // (k + 1) + 1 on."""
    m, k = size - 1, out - 1
    if not 0 <= k <= m:
        return None
    s = m // (k + 1) + 1
    return s if m // s == k else None
