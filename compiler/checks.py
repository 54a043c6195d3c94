"""The semantic checks that run on the shaped graph, as data: `PASSES` lists them in order,
each a function (graph, diagnostics) -> None that adds errors and warnings. `check` is the
whole front half of the pipeline: inference, then every pass, then the search ranges."""

from __future__ import annotations

import math
from dataclasses import replace

from nnc.compiler.graph import Graph, ResidualInfo, residuals
from nnc.compiler.shapes import infer
from nnc.compiler.spec import LayerNode, Spec
from nnc.compiler.values import SearchRange, format_value
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.preprocess import PREPROCESS
from nnc.compiler.vocab.sources import SOURCES
from nnc.diagnostics import Collector, Diagnostic, NncError, Span, unknown
from nnc.grammar.parse import Entry, Statement, parse


def data_fits_input(graph: Graph, out: Collector) -> None:
    """Preprocessing and augmentation apply to the input's kind; a fixed data set's examples
    have the input's number of values."""
    spec, x = graph.spec, graph.spec.model.input
    for c in spec.data.preprocess:
        d = PREPROCESS[c.kind]
        # sequences take the steps that work elementwise on any shape (mean_image, normalize)
        ok = {"image": d.images, "vector": d.vectors, "sequence": d.images and d.vectors, "tokens": False}
        if not ok[x.kind]:
            out.error(c.span, f"preprocess {c.kind} does not apply to {x.kind} inputs",
                      "pca and whiten are for vector inputs, channel_mean for images; "
                      "mean_image and normalize for images, vectors and sequences")
    projections = [c for c in spec.data.preprocess if c.kind in ("pca", "whiten")]
    for c in projections[1:]:
        out.error(c.span, f"preprocess {c.kind}: one pca or whiten step at most (a second would project "
                          "the first one's components again)")
    for c in projections[:1]:
        if x.kind == "vector" and c.params.dims and c.params.dims > x.dims[0]:
            out.error(c.span, f"preprocess {c.kind} keeps dims={c.params.dims} components, "
                              f"but the input has {x.dims[0]} features",
                      f"dims is at most {x.dims[0]}; leave it out to keep them all")
    for c in spec.data.augment:
        if x.kind != "image":
            out.error(c.span, f"augment {c.kind} needs image inputs, the model reads {x}")
    src = SOURCES[spec.data.source.kind]
    if src.example and x.kind != "tokens" and math.prod(x.dims) != math.prod(src.example):
        c, h, w = src.example
        alternatives = (f"input image({c}, {h}, {w}), vector({c * h * w})"
                        + (f" or sequence({h}, {w})" if c == 1 else ""))
        message = (f"{src.kind} examples are {h}x{w}x{c} images ({c * h * w} values), "
                   f"but the model's input is {x} ({math.prod(x.dims)} values)")
        if "data" in spec.spans:
            out.error(spec.spans["data"], message, f"read them as {alternatives}")
        else:  # a spec without a data section may be an architecture only, for show / export
            out.warn(spec.model.input_span, f"no data section: nnc train would read {src.kind}, and {message}",
                     f"write a data section for this input, or read {src.kind} as {alternatives}")


def names_exist(graph: Graph, out: Collector) -> None:
    """Layer names used outside the model block (init rules, lr_mult, freeze, finetune skip) exist."""
    spec = graph.spec
    names = {l.name for l in graph.layers()} | {n.name for n in residuals(graph.nodes)}
    for rule in spec.init:
        if rule.layer and rule.layer not in names:
            out.add(unknown(rule.span, "layer", rule.layer, names))
    for key, mults in (("lr_mult", spec.optimizer.lr_mult), ("decay_mult", spec.optimizer.decay_mult)):
        for name in mults:
            if name not in names:
                out.add(unknown(spec.spans.get(f"optimizer.{key}.{name}"), "layer", name, names))
    skip = spec.train.finetune.skip if spec.train.finetune else ()
    for name in (*spec.train.freeze, *skip):
        if name not in names:
            where = spec.spans.get("train.freeze") if name in spec.train.freeze else spec.spans.get("train.finetune.skip")
            out.add(unknown(where, "layer", name, names))


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


def reserved_names(graph: Graph, out: Collector) -> None:
    """No layer is named like an attribute of PyTorch modules (its parameters would be lost)."""
    _reserved_in(graph.nodes, out)


def _reserved_in(nodes, out: Collector, block: str | None = None) -> None:
    for n in nodes:
        if n.name in MODULE_ATTRIBUTES:
            out.error(n.span, f"the layer name '{n.name}' is reserved (an attribute of PyTorch modules)",
                      "give this layer another name")
        elif block and n.name in RESIDUAL_ATTRIBUTES:
            out.error(n.span, f"the layer name '{n.name}' is reserved inside residual blocks "
                      f"(the projection shortcut of {block} is {block}.proj, {block}.proj_bn)",
                      "give this layer another name")
        if isinstance(n, ResidualInfo):
            _reserved_in(n.body, out, n.name)


def something_to_train(graph: Graph, out: Collector) -> None:
    spec = graph.spec
    frozen = set(spec.train.freeze)
    learned = [l for l in graph.layers() if l.tensors]
    if frozen and learned and all(frozen & set(l.path.split(".")) for l in learned):
        out.error(spec.spans.get("train.freeze"), "every layer with parameters is frozen: there is nothing to train",
                  "leave at least one layer out of freeze")


def _last_span(spec: Spec):
    return spec.model.body[-1].span if spec.model.body else spec.model.input_span


def loss_fits_output(graph: Graph, out: Collector) -> None:
    """A classification loss needs a vector of scores, one per class of a fixed data set."""
    spec, y = graph.spec, graph.output
    if not LOSSES[spec.loss.kind].classification or out.errors:
        return
    if y.kind != "vector":
        out.error(_last_span(spec), f"the model ends in {y}, but {spec.loss.kind} needs a vector of class scores",
                  "end with a dense layer of one unit per class (flatten or pool first)")
        return
    src = SOURCES[spec.data.source.kind]
    if src.classes and y.features != src.classes:
        if "data" in spec.spans:
            out.error(_last_span(spec), f"{src.kind} has {src.classes} classes, but the model ends in {y.features} scores",
                      f"end with a dense layer of {src.classes} units")
        elif not out.warnings:  # (one warning about the default data is enough)
            out.warn(_last_span(spec), f"no data section: nnc train would read {src.kind}, which has {src.classes} "
                                       f"classes, but the model ends in {y.features} scores",
                     "write a data section for this model")


def metric_exists(graph: Graph, out: Collector) -> None:
    """Early stopping and on_plateau watch a validation metric: it must exist for this spec."""
    spec = graph.spec
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


def no_double_squash(graph: Graph, out: Collector) -> None:
    """A loss that reads raw scores after a final softmax / sigmoid: a warning."""
    spec = graph.spec
    last = spec.model.body[-1] if spec.model.body else None
    if isinstance(last, LayerNode) and last.kind in ("softmax", "sigmoid") and spec.loss.kind in ("cross_entropy", "bce", "svm"):
        out.warn(last.span, f"{spec.loss.kind} reads raw scores; the final {last.kind} squashes them twice",
                 f"remove the final {last.kind}: `nnc export --probabilities` adds softmax for deployment")


# In order: a later pass may hold back while earlier ones found errors (loss_fits_output).
def training_settings(graph: Graph, out: Collector) -> None:
    """Settings that cannot work together: fp16 on the CPU or with L-BFGS, a random_resized_crop
    after another augmentation step, streaming a source that is read whole."""
    spec, cfg = graph.spec, graph.spec.train
    where = spec.spans.get("train.precision")
    if cfg.precision == "fp16" and cfg.device == "cpu":
        out.error(where, "precision fp16 needs a GPU: training in fp16 (with its gradient scaler) is CUDA's",
                  "on the CPU use fp32 (the default) or bf16")
    if cfg.precision == "fp16" and OPTIMIZERS[spec.optimizer.kind].full_batch:
        out.error(where, f"precision fp16 does not work with {spec.optimizer.kind}: its line search needs unscaled losses",
                  "use fp32 or bf16")
    for c in spec.data.augment[1:]:
        if c.kind == "random_resized_crop":
            out.error(c.span, "random_resized_crop comes first in augment: it picks the region of the original image",
                      "move it before the other steps")
    src = spec.data.source
    if spec.data.cache == "stream" and not SOURCES[src.kind].streams:
        out.error(spec.spans.get("data.cache", spec.spans.get("data")),
                  f"cache stream: {src.kind} data cannot be streamed (it is read whole)",
                  "imagefolder, npy and uncompressed npz sources stream; use cache memory or auto")


PASSES = (data_fits_input, names_exist, reserved_names, something_to_train, loss_fits_output, metric_exists,
          no_double_squash, training_settings)


def analyze(spec: Spec) -> Graph:
    """Inference and every pass; the graph carries the warnings, or an NncError has every error."""
    out = Collector(spec.document)
    graph = infer(spec, out)
    for check_pass in PASSES:
        check_pass(graph, out)
    out.raise_if_any()
    warnings = tuple(sorted(spec.warnings + tuple(out.warnings), key=Diagnostic.sort_key))
    return Graph(spec, graph.input, graph.nodes, graph.output, warnings)


def check(spec: Spec) -> Graph:
    """The whole front half: a checked graph, or an NncError with every problem found."""
    try:
        graph = analyze(spec)
    except NncError as e:
        raise e.with_document(spec.document) from None
    if spec.search:
        stmts = parse(spec.text, spec.document.name)  # once: each value is put in place of its range there
        errors = [d for r in spec.search if (d := _range_error(spec, r, stmts))]
        if errors:
            raise NncError(errors).with_document(spec.document)
    return graph


def _range_error(spec: Spec, r: SearchRange, stmts: tuple) -> Diagnostic | None:
    """The first value that range `r` can take (a bound or a choice) which the spec refuses,
    as an error at the range: the spec was validated at the range's representative only."""
    from nnc.compiler.load import build_spec

    if r.span.origin:  # written by --set: no place in the text to put a value
        return None
    values = [("choice", v) for v in r.args] if r.dist == "choice" else [("lower bound", r.args[0]), ("upper bound", r.args[1])]
    for i, (which, v) in enumerate(values):
        try:
            analyze(build_spec(_put(stmts, r.span, i), spec.document, spec.overrides))
        except NncError as e:
            d = e.diagnostics[0]
            return Diagnostic(f"this range reaches values the spec refuses: at its {which} {format_value(v)}, {d.message}",
                              r.span, help=d.help)
    return None


def _put(node, span: Span, i: int):
    """Statements (or a part of one) with the range call written at `span` replaced by its i-th
    argument, as if that value were written there (re-parsing the text per value cost 4 times
    as much). Only the nodes around `span` are rebuilt."""
    if isinstance(node, tuple):
        return tuple(_put(n, span, i) for n in node)
    if isinstance(node, Statement):
        return replace(node, entries=_put(node.entries, span, i), block=node.block and _put(node.block, span, i))
    inside = (node.span.line, node.span.column) <= (span.line, span.column) \
        and (span.end_line, span.end_column) <= (node.span.end_line, node.span.end_column)
    if not inside:
        return node
    if isinstance(node, Entry):
        return replace(node, items=_put(node.items, span, i))
    if node.kind == "call" and node.span == span:
        return node.value.args[i]
    if node.kind == "call":
        call = node.value
        return replace(node, value=replace(call, args=_put(call.args, span, i),
                                           kwargs=tuple((k, _put(v, span, i)) for k, v in call.kwargs)))
    return replace(node, value=_put(node.value, span, i)) if node.kind == "tuple" else node
