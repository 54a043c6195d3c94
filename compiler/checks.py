"""The semantic checks that run on the shaped graph, as data: `PASSES` lists them in order,
each a function (graph, diagnostics) -> None that adds errors and warnings. `check` is the
whole front half of the pipeline: inference, then every pass, then the search ranges."""

from __future__ import annotations

import math
from dataclasses import replace

from nnc.compiler.graph import Graph
from nnc.compiler.shapes import infer
from nnc.compiler.model_block import related
from nnc.compiler.spec import Spec
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
    if len(spec.model.inputs) > 1:
        for c in (*spec.data.preprocess, *spec.data.augment):
            out.error(c.span, f"{c.kind}: preprocessing and augmentation apply to a model of one input; this one "
                              f"reads {len(spec.model.inputs)}", "prepare the arrays before saving them to the npz")
        return
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
    if any(shape.kind == "image" for _, _, shape in graph.outputs):
        for c in spec.data.augment:
            out.error(c.span, f"augment {c.kind} moves the inputs only: with an image output (per-pixel targets) "
                              "they would no longer line up with their labels", "leave augment out")
    if len(spec.model.inputs) > 1:
        for c in (*spec.data.preprocess, *spec.data.augment):
            out.error(c.span, f"{c.kind}: preprocessing and augmentation apply to models of one input, "
                              f"this one reads {len(spec.model.inputs)}", "prepare the arrays beforehand")
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
    names = graph.selectable()
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


def finetune_map_exists(graph: Graph, out: Collector) -> None:
    """`finetune(map=NAME)` names a map nnc ships, or a map file (FILE.map)."""
    ft = graph.spec.train.finetune
    if not (ft and ft.map):
        return
    from nnc.compiler import namemap

    if ft.map not in namemap.shipped() and not ft.map.endswith(".map"):
        d = unknown(graph.spec.spans.get("train.finetune.map", graph.spec.spans.get("train.finetune")), "name map",
                    ft.map, namemap.shipped())
        out.add(replace(d, help=(d.help + "; " if d.help else "") + "a map file of your own ends in .map"))


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
RESIDUAL_ATTRIBUTES = ("proj", "proj_bn")  # a residual block's shortcut modules


def reserved_names(graph: Graph, out: Collector) -> None:
    """No layer or group is named like an attribute of PyTorch modules (its parameters would be
    lost), nor, inside a residual block, like the block's shortcut modules."""
    reported = set()
    residual_paths = {g.path for g in graph.groups if g.kind == "residual"}
    for n in (*graph.spec.model.body, *graph.spec.model.groups):  # as written (not the shortcuts nnc adds)
        if n.name in reported:
            continue
        parent = n.path.rsplit(".", 1)[0] if "." in n.path else ""
        notes = related(n.trace, n.span, n.span if n.trace else None)
        if n.name in MODULE_ATTRIBUTES:
            out.error(n.span, f"the layer name '{n.name}' is reserved (an attribute of PyTorch modules)",
                      "give this layer another name", notes)
            reported.add(n.name)
        elif parent in residual_paths and n.name in RESIDUAL_ATTRIBUTES:
            block = parent.rsplit(".", 1)[-1]
            out.error(n.span, f"the layer name '{n.name}' is reserved inside residual blocks "
                      f"(the projection shortcut of {block} is {block}.proj, {block}.proj_bn)",
                      "give this layer another name", notes)
            reported.add(n.name)


def something_to_train(graph: Graph, out: Collector) -> None:
    spec = graph.spec
    frozen = set(spec.train.freeze)
    learned = [l for l in graph.layers() if l.tensors]
    if frozen and learned and all(frozen & set(l.selectors) for l in learned):
        out.error(spec.spans.get("train.freeze"), "every layer with parameters is frozen: there is nothing to train",
                  "leave at least one layer out of freeze")


def _producer(graph: Graph, value: str):
    """The layer that makes `value` (None: it is an input)."""
    return next((l for l in graph.layers() if l.path == value), None)


def loss_fits_output(graph: Graph, out: Collector) -> None:
    """A classification loss needs scores per class: a vector of them, or an image of them per
    pixel (segmentation: (C, H, W) scores for (H, W) labels); as many as a fixed data set has."""
    spec = graph.spec
    if out.errors:
        return
    for (name, value, y), ol in zip(graph.outputs, spec.losses):
        if not LOSSES[ol.choice.kind].classification:
            continue
        made = _producer(graph, value)
        span = made.span if made else spec.model.input_span
        which = f"output {name}" if len(graph.outputs) > 1 else "the model"
        if y.kind not in ("vector", "image"):
            out.error(span, f"{which} ends in {y}, but {ol.choice.kind} needs a vector of class scores "
                            "(or an image of them per pixel)",
                      "end with a dense layer of one unit per class (flatten or pool first)")
            continue
        src = SOURCES[spec.data.source.kind]
        if src.classes and y.kind == "vector" and y.features != src.classes:
            if "data" in spec.spans:
                out.error(span, f"{src.kind} has {src.classes} classes, but {which} ends in {y.features} scores",
                          f"end with a dense layer of {src.classes} units")
            elif not out.warnings:  # (one warning about the default data is enough)
                out.warn(span, f"no data section: nnc train would read {src.kind}, which has {src.classes} "
                               f"classes, but {which} ends in {y.features} scores",
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
        elif metric == "val_accuracy" and LOSSES[spec.loss.kind].predicts == "values":
            out.error(span, f"{who} watches val_accuracy, but {spec.loss.kind} is a regression loss",
                      "watch val_loss")


def no_double_squash(graph: Graph, out: Collector) -> None:
    """A loss that reads raw scores after a final softmax / sigmoid: a warning."""
    for (name, value, _), ol in zip(graph.outputs, graph.spec.losses):
        last = _producer(graph, value)
        if last and last.kind in ("softmax", "sigmoid") and ol.choice.kind in ("cross_entropy", "bce", "svm"):
            out.warn(last.span, f"{ol.choice.kind} reads raw scores; the final {last.kind} squashes them twice",
                     f"remove the final {last.kind}: `nnc export --probabilities` adds softmax for deployment")


def every_value_used(graph: Graph, out: Collector) -> None:
    """A layer whose output nothing reads (and that is no output) is computed for nothing: most
    likely a `from` or a reference went to the wrong place. A warning."""
    read = {s for l in graph.layers() for s in l.sources} | {v for _, v, _ in graph.outputs}
    for l in graph.layers():
        if l.path not in read and not l.implicit:
            out.warn(l.span, f"{l.path}: nothing reads this layer's output", "continue from it, merge it, or mark it "
                     "as an output (output NAME); `from` starts again from an earlier output",
                     related(l.trace, l.span, l.span if l.trace else None))


def loss_fits_data(graph: Graph, out: Collector) -> None:
    """A fixed data set of class labels (one integer per example) cannot train a regression loss
    over several outputs, nor bce (targets in [0, 1] per output): say so at check, not in training."""
    spec = graph.spec
    src, loss = SOURCES[spec.data.source.kind], LOSSES[spec.loss.kind]
    if out.errors or not src.classes or loss.classification or (loss.predicts == "values" and graph.output.numel == 1):
        return
    message = (f"{src.kind} holds class labels (one integer in 0..{src.classes - 1} per example), but "
               + (f"{spec.loss.kind} needs targets in [0, 1], one per output" if loss.predicts == "labels" else
                  f"{spec.loss.kind} is a regression loss and the model ends in {graph.output.numel} outputs"))
    fix = f"use loss cross_entropy or svm with a last layer of {src.classes} units"
    if "data" in spec.spans:
        out.error(spec.spans.get("loss") or spec.spans["data"], message, fix)
    else:  # a spec without a data section may be an architecture only
        out.warn(spec.spans.get("loss"), f"no data section: nnc train would read {src.kind}, and {message}",
                 "write a data section for this loss")


def no_symmetric_init(graph: Graph, out: Collector) -> None:
    """The notes' first pitfall: hidden units that start with the same weights compute the same
    output and get the same gradient, so they stay the same. (The last weighted layer may start at
    zero: the loss gives each of its outputs its own gradient.)"""
    weighted = [l for l in graph.layers() if any(t.role in ("weight", "embedding") for t in l.tensors)]
    same = [l.path for l in weighted[:-1]
            if any(t.role in ("weight", "embedding") and d.kind == "constant" and t.shape[0] > 1
                   for t, (_, d, _) in zip(l.tensors, l.init))]
    if same:
        spec = graph.spec
        rule = next((r for r in spec.init if r.target == "weights" and r.init.kind == "constant"), None)
        out.warn(rule.span if rule else spec.spans.get("init"),
                 f"constant weights give every unit of {', '.join(same[:5])}{' ...' if len(same) > 5 else ''} the same "
                 "weights: they compute the same output and get the same gradient, so they never differ "
                 "(the symmetry the notes warn about)",
                 "initialize weights with small random numbers: weights auto (He or Xavier), or gaussian(std=0.01)")


def lbfgs_without_noise(graph: Graph, out: Collector) -> None:
    """The notes: L-BFGS needs a deterministic function, so turn off every source of noise."""
    from nnc.compiler.layers import LAYERS

    spec = graph.spec
    if not OPTIMIZERS[spec.optimizer.kind].full_batch:
        return
    fix = "remove it while training with L-BFGS, or use a first-order optimizer (adam, sgd)"
    for l in graph.layers():
        noise = LAYERS[l.kind].noise
        why = noise(l.params) if noise else None
        if why:
            out.warn(l.span, f"{spec.optimizer.kind} assumes the loss is the same function at every evaluation "
                             f"(the notes: turn off all sources of noise), but {l.kind} {l.name} {why}", fix)
    if spec.data.augment:
        out.warn(spec.data.augment[0].span,
                 f"{spec.optimizer.kind} assumes the loss is the same function at every evaluation (the notes: "
                 "turn off all sources of noise), but augmentation draws new examples at every step", fix)


def fits_in_memory(graph: Graph, out: Collector) -> None:
    """Training must fit in this machine's memory (compiler/footprint.py: `nnc show` prints the
    estimate; train, doctor and export refuse past the device's memory before allocating)."""
    from nnc.compiler.footprint import estimate, physical_memory, size

    have = physical_memory()
    fp = estimate(graph)
    if have and fp.training > have:
        out.warn(graph.spec.model.input_span,
                 f"{graph.spec.model.name} needs about {size(fp.training)} to train ({fp.training_parts()}), more "
                 f"than this machine's memory ({size(have)}); nnc train would refuse it here",
                 "`nnc show` lists the memory per layer: shrink the model, the batch or the data")


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



PASSES = (data_fits_input, names_exist, finetune_map_exists, reserved_names, something_to_train, loss_fits_output,
          loss_fits_data, metric_exists, no_double_squash, no_symmetric_init, lbfgs_without_noise, every_value_used,
          training_settings, fits_in_memory)


def analyze(spec: Spec) -> Graph:
    """Inference and every pass; the graph carries the warnings, or an NncError has every error."""
    out = Collector(spec.document)
    graph = infer(spec, out)
    for check_pass in PASSES:
        check_pass(graph, out)
    out.raise_if_any()
    warnings = tuple(sorted(spec.warnings + tuple(out.warnings), key=Diagnostic.sort_key))
    return replace(graph, warnings=warnings)


def check(spec: Spec) -> Graph:
    """The whole front half: a checked graph, or an NncError with every problem found."""
    try:
        graph = analyze(spec)
    except NncError as e:
        raise e.with_document(spec.document) from None
    included = [r for r in spec.search if r.span.doc is not None]
    if included:  # nnc search writes the spec it was given, with a value in place of each range
        raise NncError([Diagnostic("a search range goes in the spec itself, not in a file it includes", r.span,
                                   help="write the range in the including spec (a section there replaces the "
                                        "included one), or fix the value with --set") for r in included])
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
