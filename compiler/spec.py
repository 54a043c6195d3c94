"""Statements -> a validated, immutable `Spec` (the schema stage of the pipeline).

Every section but `model` is optional; the defaults are documented in docs/language.md
and printed by `nnc show --resolved`. A file without a version line is read as
`nnspec 1`, the only version so far.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from nnc.compiler.diagnostics import EXIT_USAGE, Collector, Diagnostic, NncError, Source, Span, did_you_mean, lines, unknown
from nnc.compiler.initializers import INITIALIZERS
from nnc.compiler.layers import LAYERS, STRUCTURE, Shape
from nnc.compiler.layers.base import Params
from nnc.compiler.values import BARE, Choice, Converter, SearchRange, positional_to_fields, validate
from nnc.grammar.parse import Statement, Value, command_line_error, decode, parse, parse_value
from nnc.runtime.augment import AUGMENT
from nnc.runtime.losses import LOSSES
from nnc.runtime.optimizers import OPTIMIZERS
from nnc.runtime.preprocess import PREPROCESS
from nnc.runtime.schedules import SCHEDULES, Warmup
from nnc.runtime.sources import SOURCES

VERSION = 1
MAX_LAYERS = 10_000  # after repeats are expanded: ResNet-152 has ~500
SECTIONS = ("model", "init", "loss", "regularize", "optimizer", "schedule", "data", "train")
INPUTS = {"image": ("C", "H", "W"), "vector": ("D",), "sequence": ("T", "D"), "tokens": ("T", "vocabulary")}

# ---------------------------------------------------------------- the validated spec


@dataclass(frozen=True)
class LayerNode:
    kind: str
    name: str
    params: Params
    span: Span
    spans: dict[str, Span] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ResidualNode:
    name: str
    project: bool
    body: tuple["LayerNode | ResidualNode", ...]
    span: Span


Node = LayerNode | ResidualNode


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input: Shape
    input_span: Span
    body: tuple[Node, ...]


@dataclass(frozen=True)
class InitRule:
    target: Literal["weights", "bias"]
    init: Choice
    layer: str | None = None  # a per-layer override
    before: str | None = None  # only layers followed by this activation
    span: Span | None = None


# One name or several: `freeze fc1`, `freeze fc1 fc2`, `skip=(fc7, fc8)`.
Names = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v)]


class Regularize(Params):
    l2: float = Field(0.0, ge=0)  # L + l2/2 * ||w||^2, gradient l2*w
    l1: float = Field(0.0, ge=0)  # L + l1 * |w|  (both together: elastic net)
    max_norm: float | None = Field(None, gt=0)  # ||w_row|| <= c after every update
    decay_bias: bool = False  # biases (and norm shifts/scales) are excluded by default


class EarlyStop(Params):
    patience: int = Field(10, ge=1)
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    min_delta: float = Field(0.0, ge=0)


class Finetune(Params):
    path: str = Field(alias="from")
    skip: Names = ()  # layers left at their fresh initialization (e.g. a new fc8)


class Train(Params):
    batch: int = Field(64, ge=1)
    epochs: int = Field(10, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    early_stop: EarlyStop | None = None
    clip_norm: float | None = Field(None, gt=0)
    clip_value: float | None = Field(None, gt=0)
    ema: float | None = Field(None, gt=0, lt=1)
    finetune: Finetune | None = None
    freeze: Names = ()
    monitor_every: int = Field(50, ge=0)  # steps between monitor samples; 0 turns monitors off


class DataOptions(Params):
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, ge=0, lt=1)
    seed: int = 0  # the split's; `train seed` drives initialization and shuffling


@dataclass(frozen=True)
class DataSpec:
    source: Choice
    val: float
    test: float
    preprocess: tuple[Choice, ...] = ()
    augment: tuple[Choice, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class OptimizerSpec:
    choice: Choice
    lr_mult: dict[str, float] = field(default_factory=dict)
    decay_mult: dict[str, float] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.choice.kind

    @property
    def params(self):
        return self.choice.params


@dataclass(frozen=True)
class ScheduleSpec:
    main: Choice
    warmup: Warmup | None = None


@dataclass(frozen=True)
class Spec:
    source: Source
    version: int
    model: ModelSpec
    init: tuple[InitRule, ...]
    loss: Choice
    regularize: Regularize
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    data: DataSpec
    train: Train
    search: tuple[SearchRange, ...] = ()
    overrides: tuple[str, ...] = ()
    spans: dict[str, Span] = field(default_factory=dict, compare=False)  # "optimizer.lr" -> where it was written
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def text(self) -> str:
        return self.source.text

    def locate(self, path: str) -> str:
        """A file the spec names (data, a checkpoint to fine-tune from): a relative path is read
        beside the spec file, else from the current directory (so a spec runs from anywhere, and
        a checkpoint, which records its spec's absolute path, finds its data)."""
        from pathlib import Path

        if Path(path).is_absolute() or self.source.name.startswith("<"):
            return path
        beside = Path(self.source.name).parent / path
        return str(beside) if beside.exists() or not Path(path).exists() else path


DEFAULTS = {
    "init": "weights auto, bias constant(0)",
    "loss": "cross_entropy",
    "regularize": "l2 0",
    "optimizer": "sgd(lr=0.01, momentum=0.9)",
    "schedule": "constant",
    "data": "digits, val 0.1, test 0.2, seed 0",
    "train": "batch 64, epochs 10, seed 0, device auto, monitor_every 50",
}

# ---------------------------------------------------------------- entry helpers


@dataclass
class Ctx:
    conv: Converter
    errors: list[Diagnostic]
    spans: dict[str, Span]


def _registry_choice(v: Value, registry: dict, what: str, path: str, ctx: Ctx) -> Choice | None:
    """A word or call naming a registry entry -> Choice with validated parameters."""
    if v.kind not in ("word", "call"):
        ctx.errors.append(Diagnostic(f"expected {what}, got {v.text!r}", v.span,
                                     help="one of: " + ", ".join(sorted(registry))))
        return None
    name = v.value if v.kind == "word" else v.value.name
    name_span = v.span if v.kind == "word" else v.value.name_span
    if name not in registry:
        ctx.errors.append(unknown(name_span, what, name, registry))
        return None
    d = registry[name]
    raw = {}
    if v.kind == "call":  # the call is the registry entry itself, even where its word is also a
        # search range's (the `uniform` initializer): only its arguments may be ranges
        raw = ctx.conv.call(v.value, path)
    spans = {}
    if v.kind == "call":
        names = [f.alias or n for n, f in d.params.model_fields.items()]
        for i, a in enumerate(v.value.args[: len(names)]):
            spans[names[i]] = a.span
        for k, kv in v.value.kwargs:
            spans[k] = kv.span
        raw = positional_to_fields(raw, d.params, name, v.span, ctx.errors)
    for k, s in spans.items():
        ctx.spans[f"{path}.{k}"] = s
    keys = dict(zip((k for k, _ in v.value.kwargs), v.value.key_spans)) if v.kind == "call" else {}
    params = validate(d.params, raw, name, v.span, spans, ctx.errors, key_spans=keys, call=name)
    return Choice(name, params, v.span) if params is not None else None


def _keyed(stmt: Statement, section: str, keys: dict[str, Any], ctx: Ctx, head: dict | None = None) -> dict:
    """Entries of `key value...` form -> raw dict. `keys` maps each key to None (plain value)
    or a registry (the values are registry words). `head` (registry, what) takes entries
    that start with an unknown word or call as the section's main choice."""
    raw: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    for entry in _entries(stmt):
        first = entry.items[0]
        key = first.value if first.kind == "word" else (first.value.name if first.kind == "call" else None)
        if key in keys and (first.kind == "word" or keys[key] is None):
            if key in raw:
                ctx.errors.append(Diagnostic(f"{section}: {key} given twice", first.span))
                continue
            spans[key] = entry.span
            ctx.spans[f"{section}.{key}"] = entry.span
            registry = keys[key]
            if first.kind == "call":  # early_stop(patience=5)
                raw[key] = _call_fields(first, ctx, f"{section}.{key}")
                spans.update({p[len(section) + 1:]: s for p, s in ctx.spans.items() if p.startswith(f"{section}.{key}.")})
            elif registry is not None:
                raw[key] = tuple(c for c in (_registry_choice(v, registry, f"{key} step", f"{section}.{key}", ctx)
                                             for v in entry.items[1:]) if c)
            else:
                vals = [ctx.conv.plain(v, f"{section}.{key}") for v in entry.items[1:]]
                raw[key] = BARE if not vals else vals[0] if len(vals) == 1 else tuple(vals)
                if len(entry.items) == 2:
                    spans[key] = ctx.spans[f"{section}.{key}"] = entry.items[1].span
        elif head is not None and "__head__" not in raw and (len(entry.items) == 1 or key in head["registry"]):
            raw["__head__"] = _registry_choice(first, head["registry"], head["what"], section, ctx)
            if len(entry.items) > 1:  # optimizer sgd(lr=0.1) momentum 0.9
                ctx.errors.append(Diagnostic(f"unexpected {entry.items[1].text!r} after the {head['what']}",
                                             entry.items[1].span,
                                             help=f"options of {key} go inside its call, {key}(name=value, ...); "
                                                  "other settings follow a comma"))
        else:
            choices = list(keys) + (list(head["registry"]) if head else [])
            ctx.errors.append(unknown(first.span, f"{section} setting", first.text, choices))
    raw["__spans__"] = spans
    return raw


def _call_fields(v: Value, ctx: Ctx, path: str) -> dict:
    raw = ctx.conv.plain(v, path)
    raw.pop("kind")
    args = raw.pop("args")
    keys = dict(zip((k for k, _ in v.value.kwargs), v.value.key_spans))
    for k, kv in v.value.kwargs:  # `fc8=10`, key and value: a wrong layer name or a wrong factor
        ctx.spans[f"{path}.{k}"] = keys[k].to(kv.span) if k in keys else kv.span
    if args:
        raw["__args__"] = args
    return raw


def _entries(stmt: Statement):
    """A section's entries: the rest of its first line, then the lines of its block."""
    first = stmt.entries[0]
    if len(first.items) > 1:
        yield type(first)(first.items[1:], first.items[1].span.to(first.span))
    yield from stmt.entries[1:]
    for s in stmt.block or ():
        if s.block is not None:
            raise NncError.at(s.span, f"a block is not allowed inside {stmt.head.value}")
        yield from s.entries


def _finish(raw: dict, model: type[Params], what: str, ctx: Ctx) -> Params | None:
    spans = raw.pop("__spans__")
    raw.pop("__head__", None)
    for k, v in list(raw.items()):
        if isinstance(v, dict) and "__args__" in v:
            sub = model.model_fields[k].annotation
            sub = next((a for a in getattr(sub, "__args__", (sub,)) if isinstance(a, type) and issubclass(a, Params)), None)
            args = v.pop("__args__")
            if sub:
                names = [f.alias or n for n, f in sub.model_fields.items()]
                v.update(zip(names, args))
            elif not v:  # `freeze (fc1, fc2)` reads as the call freeze(fc1, fc2): its arguments are the value
                raw[k] = args[0] if len(args) == 1 else tuple(args)
    return validate(model, raw, what, None, spans, ctx.errors)


# ---------------------------------------------------------------- sections


def _init(stmt: Statement | None, ctx: Ctx) -> tuple[InitRule, ...]:
    rules = [InitRule("weights", Choice("auto", INITIALIZERS["auto"].params())),
             InitRule("bias", Choice("constant", INITIALIZERS["constant"].params()))]
    if stmt is None:
        return tuple(rules)
    for entry in _entries(stmt):
        items = list(entry.items)
        layer = None
        if items[0].kind == "word" and items[0].value not in ("weights", "bias") and len(items) > 1:
            layer = items.pop(0)
        if not items or items[0].kind != "word" or items[0].value not in ("weights", "bias"):
            ctx.errors.append(Diagnostic("an init rule reads `weights INIT`, `bias INIT [before ACTIVATION]` "
                                         "or `LAYER weights INIT`", entry.span))
            continue
        target = items.pop(0).value
        if not items:
            ctx.errors.append(Diagnostic(f"init: {target} needs an initializer", entry.span,
                                         help="one of: " + ", ".join(sorted(INITIALIZERS))))
            continue
        choice = _registry_choice(items.pop(0), INITIALIZERS, "initializer", f"init.{target}", ctx)
        before = None
        if items:
            if items[0].kind == "word" and items[0].value == "before" and len(items) == 2 and items[1].kind == "word":
                before = items[1].value
                if LAYERS.get(before) is None or not LAYERS[before].activation:
                    acts = [k for k, d in LAYERS.items() if d.activation]
                    ctx.errors.append(unknown(items[1].span, "activation", before, acts))
            else:
                ctx.errors.append(Diagnostic(f"unexpected {items[0].text!r} in an init rule", items[0].span,
                                             help="a rule may end with `before ACTIVATION`, e.g. before relu"))
        if choice:
            rules.append(InitRule(target, choice, layer.value if layer else None, before,
                                  layer.span if layer else entry.span))
    return tuple(rules)


def _single(stmt: Statement | None, registry: dict, what: str, section: str, default: str, ctx: Ctx) -> Choice | None:
    if stmt is None:
        return Choice(default, registry[default].params())
    entries = list(_entries(stmt))
    if len(entries) != 1 or len(entries[0].items) != 1:
        ctx.errors.append(Diagnostic(f"{section} takes one {what}", stmt.span,
                                     help="one of: " + ", ".join(sorted(registry))))
        return None
    return _registry_choice(entries[0].items[0], registry, what, section, ctx)


def _optimizer(stmt: Statement | None, ctx: Ctx) -> OptimizerSpec | None:
    if stmt is None:
        return OptimizerSpec(Choice("sgd", OPTIMIZERS["sgd"].params(lr=0.01, momentum=0.9)))
    raw = _keyed(stmt, "optimizer", {"lr_mult": None, "decay_mult": None}, ctx,
                 head={"registry": OPTIMIZERS, "what": "optimizer"})
    choice = raw.get("__head__")
    if "__head__" not in raw:
        ctx.errors.append(Diagnostic("optimizer: which optimizer?", stmt.span, help="one of: " + ", ".join(sorted(OPTIMIZERS))))
    mults = {}
    for key in ("lr_mult", "decay_mult"):
        value = raw.get(key, {})
        if value and (not isinstance(value, dict) or value.get("__args__")):
            ctx.errors.append(Diagnostic(f"{key} reads {key}(LAYER=FACTOR, ...)", ctx.spans.get(f"optimizer.{key}")))
            value = {}
        for layer, f in value.items():
            if not isinstance(f, (int, float)) or isinstance(f, bool) or f < 0:
                ctx.errors.append(Diagnostic(f"{key} for {layer} must be a number >= 0, got {f!r}",
                                             ctx.spans.get(f"optimizer.{key}.{layer}")))
        mults[key] = {k: float(v) for k, v in value.items() if isinstance(v, (int, float))}
    if choice and choice.kind == "lbfgs" and mults["lr_mult"]:
        ctx.errors.append(Diagnostic("lbfgs has one learning rate for all layers: lr_mult cannot apply",
                                     ctx.spans.get("optimizer.lr_mult"), help="freeze layers instead, or use sgd/adam"))
    return OptimizerSpec(choice, **mults) if choice else None


def _schedule(stmt: Statement | None, ctx: Ctx) -> ScheduleSpec | None:
    if stmt is None:
        return ScheduleSpec(Choice("constant", SCHEDULES["constant"].params()))
    main, warmup = None, None
    for entry in _entries(stmt):
        v = entry.items[0]
        if len(entry.items) > 1:
            ctx.errors.append(Diagnostic("one schedule per entry; separate them with commas", entry.items[1].span))
        if v.kind == "call" and v.value.name == "warmup" or v.kind == "word" and v.value == "warmup":
            if v.kind == "word":
                ctx.errors.append(Diagnostic("warmup needs epochs=N or steps=N", v.span))
                continue
            raw = ctx.conv.plain(v, "schedule.warmup")
            raw = positional_to_fields(raw, Warmup, "warmup", v.span, ctx.errors)
            warmup = validate(Warmup, raw, "warmup", v.span, {k: kv.span for k, kv in v.value.kwargs}, ctx.errors,
                              key_spans=dict(zip((k for k, _ in v.value.kwargs), v.value.key_spans)), call="warmup")
            continue
        if main is not None:
            ctx.errors.append(Diagnostic("only one main schedule (plus an optional warmup)", v.span))
            continue
        main = _registry_choice(v, SCHEDULES, "schedule", "schedule", ctx)
    return ScheduleSpec(main or Choice("constant", SCHEDULES["constant"].params()), warmup)


def _data(stmt: Statement | None, ctx: Ctx) -> DataSpec | None:
    if stmt is None:
        return DataSpec(Choice("digits", SOURCES["digits"].params()), 0.1, 0.2)
    raw = _keyed(stmt, "data", {"val": None, "test": None, "seed": None, "preprocess": PREPROCESS, "augment": AUGMENT}, ctx,
                 head={"registry": SOURCES, "what": "data source"})
    source = raw.get("__head__")
    if "__head__" not in raw:
        source = Choice("digits", SOURCES["digits"].params())
    steps = {k: raw.pop(k, ()) for k in ("preprocess", "augment")}
    for k in ("preprocess", "augment"):
        raw["__spans__"].pop(k, None)
    opts = _finish(raw, DataOptions, "data", ctx)
    if opts and opts.val + opts.test >= 1:
        ctx.errors.append(Diagnostic(f"val {opts.val:g} + test {opts.test:g} leaves no training data",
                                     ctx.spans.get("data.test", stmt.span)))
    if source and opts:
        return DataSpec(source, opts.val, opts.test, steps["preprocess"], steps["augment"], opts.seed)
    return None


# ---------------------------------------------------------------- the model block


@dataclass
class _Draft:
    kind: str
    name: str | None
    raw: dict
    span: Span
    spans: dict[str, Span]
    body: list["_Draft"] | None = None  # residual blocks
    project: bool = False


def _layer_line(stmt: Statement, ctx: Ctx) -> _Draft | None:
    if len(stmt.entries) > 1:
        ctx.errors.append(Diagnostic("one layer per line (no commas in the model block)", stmt.entries[1].span))
    items = list(stmt.entries[0].items)
    head = items.pop(0)
    kind = head.value
    d = LAYERS[kind]
    keys = {f.alias or n: f for n, f in d.params.model_fields.items()}
    name = None
    if items and items[0].kind == "word" and items[0].value not in keys and items[0].value not in ("true", "false"):
        name = items.pop(0)
    raw: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    positional = list(d.positional)
    i, broken = 0, False
    while i < len(items):
        v = items[i]
        if v.kind == "word" and v.value in keys:
            key = v.value
            is_bool = keys[key].annotation is bool
            nxt = items[i + 1] if i + 1 < len(items) else None
            if nxt is None or (is_bool and nxt.kind == "word" and nxt.value in keys):
                if not is_bool:  # reported once: the layer is not validated further
                    ctx.errors.append(Diagnostic(f"{kind}: {key} needs a value", v.span, help=f"write `{key} VALUE`"))
                    broken = True
                raw[key], spans[key] = True, v.span
                i += 1
                continue
            if key in raw:
                ctx.errors.append(Diagnostic(f"{kind}: {key} is given twice", v.span.to(nxt.span)))
                i += 2
                continue
            raw[key] = ctx.conv.plain(nxt, f"model.{{name}}.{key}")
            spans[key] = nxt.span
            if key in positional:
                positional.remove(key)
            i += 2
        elif v.kind == "word":
            ctx.errors.append(unknown(v.span, f"{kind} option", v.value, keys))
            i += 1
            if i < len(items) and items[i].kind != "word":  # its value: no second error for it, and
                close = difflib.get_close_matches(v.value, list(keys), n=1, cutoff=0.6)  # a near
                if close and close[0] not in raw:  # miss stands for its key (no "needs kernel" too)
                    raw[close[0]], spans[close[0]] = ctx.conv.plain(items[i], f"model.{{name}}.{close[0]}"), items[i].span
                    if close[0] in positional:
                        positional.remove(close[0])
                i += 1
        elif positional:
            key = positional.pop(0)
            raw[key] = ctx.conv.plain(v, f"model.{{name}}.{key}")
            spans[key] = v.span
            i += 1
        else:
            ctx.errors.append(Diagnostic(f"{kind}: unexpected value {v.text!r}", v.span,
                                         help=f"write options as `key value`, one of: {', '.join(keys) or '(none)'}"))
            i += 1
    return None if broken else _Draft(kind, name.value if name else None, raw, stmt.span, spans)


def _body(stmts: tuple[Statement, ...], ctx: Ctx, depth: int = 0) -> list[_Draft]:
    out: list[_Draft] = []
    for s in stmts:
        head = s.head
        word = head.value if head.kind == "word" else None
        if word == "repeat":
            items = s.entries[0].items
            if len(items) != 2 or items[1].kind != "number" or not isinstance(items[1].value, int) or items[1].value < 1:
                ctx.errors.append(Diagnostic("repeat needs a count >= 1, e.g. repeat 3 { ... }", s.span))
                continue
            if s.block is None:
                ctx.errors.append(Diagnostic("repeat needs a { ... } block of layers", s.span))
                continue
            once = _body(s.block, ctx, depth)
            n = items[1].value
            if not s.block:
                ctx.errors.append(Diagnostic("repeat of an empty block", s.span, help="put layers inside { ... }"))
            elif _count(out) + n * _count(once) > MAX_LAYERS:
                ctx.errors.append(Diagnostic(f"repeat {n:,} makes the model over {MAX_LAYERS:,} layers, "
                                             f"more than nnc builds", items[1].span))
            else:
                for k in range(n):
                    out += [_copy(d, k + 1 if n > 1 else None) for d in once]
        elif word == "residual":
            items = s.entries[0].items[1:]
            name, project = None, False
            for v in items:
                if v.kind == "word" and v.value == "project":
                    project = True
                elif v.kind == "word" and name is None:
                    name = v.value
                else:
                    ctx.errors.append(Diagnostic(f"unexpected {v.text!r} after residual", v.span,
                                                 help="residual [NAME] [project] { ... }"))
            if not s.block:
                ctx.errors.append(Diagnostic("residual needs a { ... } block of layers", s.span))
                continue
            out.append(_Draft("residual", name, {}, s.span, {}, _body(s.block, ctx, depth + 1), project))
        elif word == "input":
            ctx.errors.append(Diagnostic("input must be the first line of the model block", s.span))
        elif word in LAYERS:
            if s.block is not None:
                ctx.errors.append(Diagnostic(f"{word} takes no {{ ... }} block", s.span))
            d = _layer_line(s, ctx)
            if d:
                out.append(d)
        else:
            ctx.errors.append(unknown(head.span, "layer", head.text, list(LAYERS) + list(STRUCTURE)))
    return out


def _count(drafts: list[_Draft]) -> int:
    return sum(_count(d.body) if d.body is not None else 1 for d in drafts)


def _copy(d: _Draft, k: int | None) -> _Draft:
    name = f"{d.name}_{k}" if d.name and k else d.name
    body = [_copy(b, k) for b in d.body] if d.body is not None else None
    return _Draft(d.kind, name, dict(d.raw), d.span, d.spans, body, d.project)


def _name_all(drafts: list[_Draft], ctx: Ctx) -> None:
    """Explicit names must be unique; the others become conv1, conv2, ..., res1, ..."""
    seen: dict[str, Span] = {}

    def explicit(ds):
        for d in ds:
            if d.name and not d.name.isidentifier():
                ctx.errors.append(Diagnostic(f"the layer name '{d.name}' may hold only letters, digits and _", d.span,
                                             help="'.' joins a block's name to its layers' (res1.conv1)"))
            if d.name:
                if d.name in seen:
                    ctx.errors.append(Diagnostic(f"layer name '{d.name}' is used twice (first on line {seen[d.name].line})", d.span))
                seen[d.name] = d.span
            if d.body:
                explicit(d.body)

    explicit(drafts)
    counters: dict[str, int] = {}

    def auto(ds):
        for d in ds:
            if not d.name:
                prefix = "res" if d.kind == "residual" else LAYERS[d.kind].prefix
                while True:
                    counters[prefix] = counters.get(prefix, 0) + 1
                    if f"{prefix}{counters[prefix]}" not in seen:
                        break
                d.name = f"{prefix}{counters[prefix]}"
                seen[d.name] = d.span
            if d.body:
                auto(d.body)

    auto(drafts)


def _validate_nodes(drafts: list[_Draft], ctx: Ctx) -> tuple[Node, ...]:
    out: list[Node] = []
    for d in drafts:
        if d.kind == "residual":
            out.append(ResidualNode(d.name, d.project, _validate_nodes(d.body, ctx), d.span))
            continue
        for k, s in d.spans.items():
            ctx.spans[f"model.{d.name}.{k}"] = s
        ranges = ctx.conv.ranges  # a layer's ranges were recorded before auto-naming: fill in its name
        for i, r in enumerate(ranges):
            if r.path.startswith("model.{name}.") and r.span in d.spans.values():
                ranges[i] = replace(r, path=r.path.replace("{name}", d.name or d.kind))
        params = validate(LAYERS[d.kind].params, d.raw, d.name if d.name else d.kind, d.span, d.spans, ctx.errors)
        if params is not None:
            out.append(LayerNode(d.kind, d.name, params, d.span, d.spans))
    return tuple(out)


def _input(stmt: Statement | None, block_span: Span, ctx: Ctx) -> tuple[Shape, Span] | None:
    example = "input image(3, 32, 32), vector(64), sequence(T, D) or tokens(T, vocabulary)"
    if stmt is None or stmt.head.value != "input":
        ctx.errors.append(Diagnostic("the model block must start with its input", stmt.span if stmt else block_span,
                                     help=f"e.g. {example}"))
        return None
    items = stmt.entries[0].items
    if len(items) != 2 or items[1].kind != "call":
        ctx.errors.append(Diagnostic("input reads KIND(dims...)", stmt.span, help=f"e.g. {example}"))
        return None
    call = items[1].value
    if call.name not in INPUTS:
        ctx.errors.append(unknown(call.name_span, "input kind", call.name, INPUTS))
        return None
    dims = [a.value for a in call.args]
    names = INPUTS[call.name]
    if call.kwargs or len(dims) != len(names) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                       for x in dims):
        ctx.errors.append(Diagnostic(f"{call.name} needs {len(names)} positive whole numbers ({', '.join(names)})",
                                     items[1].span))
        return None
    if call.name == "tokens":
        return Shape("tokens", (dims[0],), dims[1]), items[1].span
    return Shape(call.name, tuple(dims)), items[1].span


def _model(stmt: Statement, ctx: Ctx) -> ModelSpec | None:
    items = stmt.entries[0].items
    name = items[1].value if len(items) > 1 and items[1].kind == "word" else "model"
    if len(items) > 2 or len(items) == 2 and items[1].kind != "word":
        ctx.errors.append(Diagnostic("model reads `model NAME { ... }`", stmt.span))
    if stmt.block is None:
        ctx.errors.append(Diagnostic("model needs a { ... } block: its input, then one layer per line", stmt.span))
        return None
    block = list(stmt.block)
    inp = _input(block[0] if block else None, stmt.span, ctx)
    drafts = _body(tuple(block[1:]), ctx)
    if not drafts and inp:
        ctx.errors.append(Diagnostic("the model has no layers", stmt.span))
    _name_all(drafts, ctx)
    nodes = _validate_nodes(drafts, ctx)
    return ModelSpec(name, inp[0], inp[1], nodes) if inp else None


# ---------------------------------------------------------------- entry point


def _version(stmts: list[Statement], ctx: Ctx) -> int:
    if stmts and stmts[0].head.kind == "word" and stmts[0].head.value == "nnspec":
        s = stmts.pop(0)
        items = s.entries[0].items
        if len(items) != 2 or items[1].kind != "number" or items[1].value != VERSION:
            got = " ".join(v.text for v in items[1:]) or "nothing"
            newer = len(items) == 2 and items[1].kind == "number" and items[1].value > VERSION
            ctx.errors.append(Diagnostic(f"this nnc reads nnspec {VERSION}, the file says {got}", s.span,
                                         help="the file is for a newer nnc" if newer else
                                         f"the first line reads `nnspec {VERSION}` (or leave it out)"))
        return VERSION
    for s in stmts:
        if s.head.kind == "word" and s.head.value == "nnspec":
            ctx.errors.append(Diagnostic("the version line must come first", s.span))
    return VERSION


def build_spec(stmts: tuple[Statement, ...], source: Source, overrides: tuple[str, ...] = ()) -> Spec:
    ctx = Ctx(Converter(), [], {})
    stmts = list(stmts)
    version = _version(stmts, ctx)
    sections: dict[str, Statement] = {}
    for s in stmts:
        word = s.head.value if s.head.kind == "word" else s.head.text
        if word == "nnspec":  # a late version line: reported by _version
            continue
        if word not in SECTIONS:
            hint = did_you_mean(word, SECTIONS)
            if word in LAYERS:
                hint = "layers go inside the model { ... } block"
            ctx.errors.append(Diagnostic(f"unknown section '{word}'", s.head.span,
                                         help=hint or "sections: " + ", ".join(SECTIONS)))
        elif word in sections:
            ctx.errors.append(Diagnostic(f"{word} is given twice (first on line {sections[word].span.line})", s.head.span))
        else:
            sections[word] = s
            ctx.spans[word] = s.span
    _apply_overrides(sections, overrides, ctx)
    if "model" not in sections:
        all_ = lines(source.text)
        where = Span(1, 1, 1, 2) if not stmts else Span(len(all_), 1, len(all_), len(all_[-1]) + 1)
        ctx.errors.append(Diagnostic("no model block" if stmts else "empty spec: no model block", where,
                                     help="a spec needs at least: model NAME { input ...; layers }"))
    model = _model(sections["model"], ctx) if "model" in sections else None
    try:
        init = _init(sections.get("init"), ctx)
        loss = _single(sections.get("loss"), LOSSES, "loss", "loss", "cross_entropy", ctx)
        reg_stmt = sections.get("regularize")
        reg = _finish(_keyed(reg_stmt, "regularize", {k: None for k in Regularize.model_fields}, ctx), Regularize,
                      "regularize", ctx) if reg_stmt else Regularize()
        opt = _optimizer(sections.get("optimizer"), ctx)
        sched = _schedule(sections.get("schedule"), ctx)
        data = _data(sections.get("data"), ctx)
        train_stmt = sections.get("train")
        keys = {f.alias or n: None for n, f in Train.model_fields.items()}
        train = _finish(_keyed(train_stmt, "train", keys, ctx), Train, "train", ctx) if train_stmt else Train()
    except NncError as e:
        ctx.errors.extend(e.diagnostics)
    ctx.errors.extend(ctx.conv.errors)
    if ctx.errors:
        fractional = {r.span for r in ctx.conv.ranges if r.dist in ("uniform", "loguniform")}
        raise NncError([replace(d, help="uniform and loguniform draw fractions; intuniform(LOW, HIGH) draws whole numbers")
                        if d.span in fractional and "must be a whole number" in d.message else d
                        for d in ctx.errors]).with_source(source)
    return Spec(source, version, model, init, loss, reg, opt, sched, data, train, tuple(ctx.conv.ranges),
                tuple(overrides), ctx.spans)


CALL_ENTRIES = {("optimizer", "lr_mult"), ("optimizer", "decay_mult"), ("schedule", "warmup"),
                ("train", "early_stop"), ("train", "finetune")}


def split_override(text: str) -> tuple[list[str], str]:
    """`--set optimizer.lr=3e-4` -> (["optimizer", "lr"], "3e-4"); a malformed one is command-line
    misuse (exit 2), found before any spec is read."""
    key, sep, value = text.partition("=")
    path = key.strip().split(".")
    if not sep or len(path) > 2 or path[0] not in SECTIONS or path[0] == "model":
        raise NncError(f"--set {text}: expected SECTION.KEY=VALUE or SECTION=ENTRIES with a section among "
                       f"{', '.join(s for s in SECTIONS if s != 'model')}, e.g. --set optimizer.lr=3e-4",
                       exit_code=EXIT_USAGE)
    return path, value


def _apply_overrides(sections: dict[str, Statement], overrides: tuple[str, ...], ctx: Ctx) -> None:
    """`--set section.key=value`: replaces (or adds) one entry of a section, as if written there."""
    from nnc.grammar.parse import Entry

    for text in overrides:
        path, value = split_override(text)
        if len(path) == 1:  # --set schedule="step(every=5)": the whole section, as if written on its line
            try:
                (stmt,) = parse(f"{path[0]} {value}\n", f"--set {text}")
            except NncError as e:
                raise command_line_error(e, value, f"--set {text}") from None
            sections[path[0]] = _unplace(stmt, f"--set {text}")
            continue
        section, field_ = path
        # entries written as a call of their own name: lr_mult(fc8=10), warmup(epochs=2), early_stop(patience=3)
        mult = (section, field_) in CALL_ENTRIES
        value = value.strip()
        if mult and value.startswith("("):  # --set optimizer.lr_mult="(fc8=10)" -> lr_mult(fc8=10)
            value = field_ + value
        v = _unplace(parse_value(value, f"--set {text}"), f"--set {text}")
        stmt = sections.get(section)
        word = Value("word", field_, v.span)
        if section in ("optimizer", "loss") and not mult or section == "schedule" and field_ != "warmup":
            stmt = _set_call_arg(stmt, section, field_, v)
        else:
            new = Entry((v,) if mult and v.kind == "call" and v.value.name == field_ else (word, v), v.span)
            if stmt is None:
                stmt = Statement((Entry((Value("word", section, v.span),), v.span), new), None, v.span)
            else:
                entries = [e for e in _entries(stmt) if not (e.items[0].kind in ("word", "call")
                                                             and e.items[0].text == field_)]
                stmt = Statement((Entry((stmt.head,), stmt.head.span), *entries, new), None, stmt.span)
        sections[section] = stmt


def _unplace(node, origin: str):
    """Spans of --set text point into the command line, not the spec: replace them by one that
    names the --set (rendered instead of a file position)."""
    from dataclasses import fields, replace

    from nnc.grammar.parse import Call, Entry

    nowhere = Span(0, 0, 0, 0, origin)
    if isinstance(node, tuple):
        return tuple(_unplace(n, origin) for n in node)
    if isinstance(node, (Value, Entry, Statement, Call)):
        changes = {f.name: _unplace(getattr(node, f.name), origin) for f in fields(node)}
        return replace(node, **{k: (nowhere if isinstance(v, Span) else v) for k, v in changes.items()})
    if isinstance(node, Span):
        return nowhere
    return node


def _set_call_arg(stmt: Statement | None, section: str, key: str, v: Value) -> Statement:
    """--set optimizer.lr=... (or loss.KEY, schedule.KEY) rewrites the main call's keyword argument."""
    from nnc.grammar.parse import Call, Entry

    default = {"optimizer": "sgd", "loss": "cross_entropy", "schedule": "constant"}[section]
    entries = list(_entries(stmt)) if stmt else []
    main = next((e for e in entries if len(e.items) == 1 and e.items[0].text != "warmup"), None)
    head = main.items[0] if main else Value("word", default, v.span)
    if stmt is None and section == "optimizer":
        head = Value("call", Call("sgd", v.span, (), (("momentum", Value("number", 0.9, v.span)),)), v.span)
    call = head.value if head.kind == "call" else Call(head.value, head.span, (), ())
    names = [f.alias or n for n, f in _params_of(section, call.name).model_fields.items()] if _params_of(section, call.name) else []
    args = list(call.args)
    kwargs = dict(call.kwargs)
    if key in names and names.index(key) < len(args):
        args[names.index(key)] = v
    else:
        kwargs[key] = v
    new_head = Value("call", Call(call.name, call.name_span, tuple(args), tuple(kwargs.items())), head.span)
    rest = [e for e in entries if e is not main]
    sec_word = stmt.head if stmt else Value("word", section, v.span)
    return Statement((Entry((sec_word,), sec_word.span), Entry((new_head,), new_head.span), *rest), None,
                     stmt.span if stmt else v.span)


def _params_of(section: str, kind: str):
    reg = {"optimizer": OPTIMIZERS, "loss": LOSSES, "schedule": SCHEDULES}[section]
    return reg[kind].params if kind in reg else None


def load_text(text: str, name: str = "<spec>", overrides: tuple[str, ...] = ()) -> Spec:
    return build_spec(parse(text, name), Source(name, text), tuple(overrides))


def read_source(path: str) -> str:
    """The spec file's text, or a user error naming the problem."""
    import sys
    from pathlib import Path

    if path == "-":  # `nnc check -`: the spec on standard input
        return decode(sys.stdin.buffer.read(), "<stdin>")
    if not path:
        raise NncError("the spec path is empty")
    p = Path(path)
    if not p.exists():
        raise NncError(f"{path}: no such file")
    if p.is_dir():
        raise NncError(f"{path}: is a directory, not a .nnspec file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise NncError(f"{path}: cannot read ({e.strerror})") from None
    return decode(data, path)


def load_spec(path: str, overrides: tuple[str, ...] = ()) -> Spec:
    return load_text(read_source(path), "<stdin>" if path == "-" else str(path), tuple(overrides))
