"""Spec -> Graph: each layer's input and output shape, tensors, parameter count, FLOPs and
resolved initialization. Errors of the pass are collected, sorted, and reported together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

from nnc.compiler.layers import LAYERS, Shape, ShapeError, Tensor
from nnc.compiler.layers.base import Params
from nnc.compiler.layers.conv import Conv
from nnc.compiler.layers.norm import BatchNorm
from nnc.compiler.spec import InitRule, LayerNode, ResidualNode, Spec
from nnc.compiler.values import SearchRange, format_value, resolve_text
from nnc.compiler.vocab.initializers import FIXED, Dist, resolve
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.preprocess import PREPROCESS, output_dims
from nnc.compiler.vocab.sources import SOURCES
from nnc.diagnostics import Collector, Diagnostic, NncError, Span, unknown


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


# ---------------------------------------------------------------- the pass


class _Pass:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.out = Collector(spec.source)
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

    def references(self, graph_names: set[str]) -> None:
        """Layer names used outside the model block must exist."""
        spec = self.spec
        for rule in spec.init:
            if rule.layer and rule.layer not in graph_names:
                self.out.errors.append(unknown(rule.span, "layer", rule.layer, graph_names))
        for key, mults in (("lr_mult", spec.optimizer.lr_mult), ("decay_mult", spec.optimizer.decay_mult)):
            for name in mults:
                if name not in graph_names:
                    self.out.errors.append(unknown(spec.spans.get(f"optimizer.{key}.{name}"), "layer", name, graph_names))
        names = list(spec.train.freeze) + list(spec.train.finetune.skip if spec.train.finetune else ())
        for name in names:
            if name not in graph_names:
                where = spec.spans.get("train.freeze") if name in spec.train.freeze else spec.spans.get("train.finetune.skip")
                self.out.errors.append(unknown(where, "layer", name, graph_names))

    def data(self, x: Shape) -> Shape:
        spec = self.spec
        steps = [(c.kind, c.params) for c in spec.data.preprocess]
        for c in spec.data.preprocess:
            d = PREPROCESS[c.kind]
            # sequences take the steps that work elementwise on any shape (mean_image, normalize)
            ok = {"image": d.images, "vector": d.vectors, "sequence": d.images and d.vectors, "tokens": False}
            if not ok[x.kind]:
                self.out.error(c.span, f"preprocess {c.kind} does not apply to {x.kind} inputs",
                               "pca and whiten are for vector inputs, channel_mean for images; "
                               "mean_image and normalize for images, vectors and sequences")
        projections = [c for c in spec.data.preprocess if c.kind in ("pca", "whiten")]
        for c in projections[1:]:
            self.out.error(c.span, f"preprocess {c.kind}: one pca or whiten step at most (a second would project "
                                   "the first one's components again)")
        for c in projections[:1]:
            if x.kind == "vector" and c.params.dims and c.params.dims > x.dims[0]:
                self.out.error(c.span, f"preprocess {c.kind} keeps dims={c.params.dims} components, "
                                       f"but the input has {x.dims[0]} features",
                               f"dims is at most {x.dims[0]}; leave it out to keep them all")
        for c in spec.data.augment:
            if x.kind != "image":
                self.out.error(c.span, f"augment {c.kind} needs image inputs, the model reads {x}")
        src = SOURCES[spec.data.source.kind]
        if src.example and x.kind != "tokens" and math.prod(x.dims) != math.prod(src.example):
            c, h, w = src.example
            alternatives = (f"input image({c}, {h}, {w}), vector({c * h * w})"
                            + (f" or sequence({h}, {w})" if c == 1 else ""))
            message = (f"{src.kind} examples are {h}x{w}x{c} images ({c * h * w} values), "
                       f"but the model's input is {x} ({math.prod(x.dims)} values)")
            if "data" in spec.spans:
                self.out.error(spec.spans["data"], message, f"read them as {alternatives}")
            else:  # a spec without a data section may be an architecture only, for show / export
                self.out.warn(spec.model.input_span, f"no data section: nnc train would read {src.kind}, and {message}",
                              f"write a data section for this input, or read {src.kind} as {alternatives}")
        if x.kind == "vector":
            return Shape("vector", output_dims(steps, x.dims))
        return x


# Layer names become attributes of torch modules: these would shadow nn.Module's own (the list
# is torch's, kept torch-free here; tests/test_specs.py checks it against the installed torch).
MODULE_ATTRIBUTES = frozenset("""
    T_destination _apply _backward_hooks _backward_pre_hooks _buffers _call_impl _compiled_call_impl
    _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks
    _forward_pre_hooks_with_kwargs _get_backward_hooks _get_backward_pre_hooks _get_name
    _is_full_backward_hook _load_from_state_dict _load_state_dict_post_hooks
    _load_state_dict_pre_hooks _maybe_warn_non_full_backward_hook _modules _named_members
    _non_persistent_buffers_set _parameters _register_load_state_dict_pre_hook
    _register_state_dict_hook _replicate_for_data_parallel _save_to_state_dict _slow_forward
    _state_dict_hooks _state_dict_pre_hooks _version _wrapped_call_impl add_module apply bfloat16
    buffers call_super_init children compile cpu cuda double dump_patches eval extra_repr float
    forward get_buffer get_extra_state get_parameter get_submodule half ipu load_state_dict modules
    mtia named_buffers named_children named_modules named_parameters parameters
    register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
    register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state
    set_submodule share_memory state_dict to to_empty train training type xpu zero_grad
    spec_name
""".split())
RESIDUAL_ATTRIBUTES = ("proj", "proj_bn", "_body")  # a residual block's own modules and fields


def _reserved_names(nodes, out: Collector, block: str | None = None) -> None:
    for n in nodes:
        if n.name in MODULE_ATTRIBUTES:
            out.error(n.span, f"the layer name '{n.name}' is reserved (an attribute of PyTorch modules)",
                      "give this layer another name")
        elif block and n.name in RESIDUAL_ATTRIBUTES:
            out.error(n.span, f"the layer name '{n.name}' is reserved inside residual blocks "
                      f"(the projection shortcut of {block} is {block}.proj, {block}.proj_bn)",
                      "give this layer another name")
        if isinstance(n, ResidualInfo):
            _reserved_names(n.body, out, n.name)


def infer(spec: Spec) -> Graph:
    p = _Pass(spec)
    x = p.data(spec.model.input)
    nodes, out = p.nodes(spec.model.body, x)
    graph = Graph(spec, x, tuple(nodes), out)
    names = {l.name for l in graph.layers()} | {n.name for n in _residuals(graph.nodes)}
    p.references(names)
    _reserved_names(graph.nodes, p.out)
    frozen = set(spec.train.freeze)
    learned = [l for l in graph.layers() if l.tensors]
    if frozen and learned and all(frozen & set(l.path.split(".")) for l in learned):
        p.out.error(spec.spans.get("train.freeze"), "every layer with parameters is frozen: there is nothing to train",
                    "leave at least one layer out of freeze")
    loss = LOSSES[spec.loss.kind]
    last = spec.model.body[-1] if spec.model.body else None
    if loss.classification and out.kind != "vector" and not p.out.errors:
        p.out.error(last.span if last else spec.model.input_span,
                    f"the model ends in {out}, but {spec.loss.kind} needs a vector of class scores",
                    "end with a dense layer of one unit per class (flatten or pool first)")
    src = SOURCES[spec.data.source.kind]
    if loss.classification and src.classes and out.kind == "vector" and out.features != src.classes and not p.out.errors:
        if "data" in spec.spans:
            p.out.error(last.span if last else spec.model.input_span,
                        f"{src.kind} has {src.classes} classes, but the model ends in {out.features} scores",
                        f"end with a dense layer of {src.classes} units")
        elif not p.out.warnings:  # (one warning about the default data is enough)
            p.out.warn(last.span if last else spec.model.input_span,
                       f"no data section: nnc train would read {src.kind}, which has {src.classes} classes, "
                       f"but the model ends in {out.features} scores", "write a data section for this model")
    _metric_rules(spec, p.out)
    if isinstance(last, LayerNode) and last.kind in ("softmax", "sigmoid") and spec.loss.kind in ("cross_entropy", "bce", "svm"):
        p.out.warn(last.span, f"{spec.loss.kind} reads raw scores; the final {last.kind} squashes them twice",
                   f"remove the final {last.kind}: `nnc export --probabilities` adds softmax for deployment")
    p.out.raise_if_any()
    return Graph(spec, x, tuple(nodes), out, tuple(sorted(spec.warnings + tuple(p.out.warnings), key=Diagnostic.sort_key)))


def _metric_rules(spec: Spec, out: Collector) -> None:
    """Early stopping and on_plateau watch a validation metric: it must exist for this spec."""
    watchers = []
    if spec.train.early_stop:
        watchers.append(("early_stop", spec.train.early_stop.metric, spec.spans.get("train.early_stop")))
    if spec.schedule.main.kind == "on_plateau":
        watchers.append(("on_plateau", spec.schedule.main.params.metric, spec.schedule.main.span))
    for who, metric, span in watchers:
        if spec.data.val == 0:
            out.error(span, f"{who} watches {metric}, but data val is 0: there is no validation split",
                      "give the data section a validation fraction, e.g. val 0.1")
        elif metric == "val_accuracy" and not LOSSES[spec.loss.kind].classification:
            out.error(span, f"{who} watches val_accuracy, but {spec.loss.kind} is a regression loss",
                      "watch val_loss")


def _shortcut_stride(size: int, out: int) -> int | None:
    """The smallest stride s of a 1x1 convolution (no padding) that maps `size` to `out`:
    floor((size - 1) / s) + 1 = out, so 7 -> 4 at stride 2, as the body's 3x3 stride-2 conv does."""
    return next((s for s in range(1, size + 1) if (size - 1) // s + 1 == out), None)


def _residuals(nodes) -> Iterator[ResidualInfo]:
    for n in nodes:
        if isinstance(n, ResidualInfo):
            yield n
            yield from _residuals(n.body)


def check(spec: Spec) -> Graph:
    """The whole front half: a checked graph, or an NncError with every problem found."""
    try:
        graph = infer(spec)
    except NncError as e:
        raise e.with_source(spec.source) from None
    if spec.search:
        errors = [d for r in spec.search if (d := _range_error(spec, r))]
        if errors:
            raise NncError(errors).with_source(spec.source)
    return graph


def _range_error(spec: Spec, r: SearchRange) -> Diagnostic | None:
    """The first value that range `r` can take (a bound or a choice) which the spec refuses,
    as an error at the range: the spec was validated at the range's representative only."""
    from nnc.compiler.load import load_text

    if r.span.origin:  # written by --set: no place in the text to put a value
        return None
    values = [("choice", v) for v in r.args] if r.dist == "choice" else [("lower bound", r.args[0]), ("upper bound", r.args[1])]
    for which, v in values:
        try:
            infer(load_text(resolve_text(spec.text, {r: v}), spec.source.name, spec.overrides))
        except NncError as e:
            d = e.diagnostics[0]
            return Diagnostic(f"this range reaches values the spec refuses: at its {which} {format_value(v)}, {d.message}",
                              r.span, help=d.help)
    return None
