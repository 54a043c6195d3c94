"""The sections of a spec, from statements to validated parts (init, loss, regularize,
optimizer, schedule, data, train), collecting every error in a `Ctx`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from nnc.compiler.layers import LAYERS
from nnc.compiler.layers.base import Params
from nnc.compiler.spec import (DataOptions, DataSpec, InitRule, OptimizerSpec, OutputLoss, Regularize, ScheduleSpec,
                               Train)
from nnc.compiler.values import BARE, REPORTED, Choice, Converter, format_value, positional_to_fields, validate
from nnc.compiler.vocab.augment import AUGMENT
from nnc.compiler.vocab.initializers import INITIALIZERS
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.preprocess import PREPROCESS
from nnc.compiler.vocab.schedules import SCHEDULES, Warmup
from nnc.compiler.vocab.sources import SOURCES
from nnc.diagnostics import Collector, Diagnostic, NncError, Span, unknown
from nnc.grammar.parse import Statement, Value

# ---------------------------------------------------------------- entry helpers


@dataclass
class Ctx:
    """What reading a spec's statements collects: its diagnostics, search ranges and spans."""

    out: Collector
    conv: Converter
    spans: dict[str, Span]

    @classmethod
    def new(cls) -> "Ctx":
        out = Collector()
        return cls(out, Converter(out), {})


def _registry_choice(v: Value, registry: dict, what: str, path: str, ctx: Ctx) -> Choice | None:
    """A word or call naming a registry entry -> Choice with validated parameters."""
    if v.kind not in ("word", "call"):
        ctx.out.add(Diagnostic(f"expected {what}, got {v.text!r}", v.span,
                                     help="one of: " + ", ".join(sorted(registry))))
        return None
    name = v.value if v.kind == "word" else v.value.name
    name_span = v.span if v.kind == "word" else v.value.name_span
    if name not in registry:
        ctx.out.add(registry.unknown(name_span, name, what))
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
        raw = positional_to_fields(raw, d.params, name, v.span, ctx.out.errors)
    for k, s in spans.items():
        ctx.spans[f"{path}.{k}"] = s
    keys = dict(zip((k for k, _ in v.value.kwargs), v.value.key_spans)) if v.kind == "call" else {}
    params = validate(d.params, raw, name, v.span, spans, ctx.out.errors, key_spans=keys, call=name)
    return Choice(name, params, v.span) if params is not None else None


def _keyed(stmt: Statement, section: str, keys: dict[str, Any], ctx: Ctx, head: dict | None = None) -> dict:
    """Entries of `key value...` form -> raw dict. `keys` maps each key to None (plain value)
    or a registry (the values are registry words). `head` (registry, what) takes entries
    that start with an unknown word or call as the section's main choice."""
    raw: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    for entry in entries(stmt):
        first = entry.items[0]
        key = first.value if first.kind == "word" else (first.value.name if first.kind == "call" else None)
        if key in keys and (first.kind == "word" or keys[key] is None):
            if key in raw:
                ctx.out.add(Diagnostic(f"{section}: {key} given twice", first.span))
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
                later = next((v for v in entry.items[2:] if v.kind == "word" and v.value in keys), None)
                if later is not None:  # `train batch 32 epochs 3`
                    ctx.out.add(Diagnostic(f"{section}: {later.value} follows {key}'s value without a comma",
                                                 later.span, help=f"settings are separated by commas: "
                                                                  f"{section} {key} ..., {later.value} ..."))
                    continue
                vals = [ctx.conv.plain(v, f"{section}.{key}") for v in entry.items[1:]]
                raw[key] = BARE if not vals else vals[0] if len(vals) == 1 else tuple(vals)
                if len(entry.items) == 2:
                    spans[key] = ctx.spans[f"{section}.{key}"] = entry.items[1].span
        elif head is not None and "__head__" not in raw and (len(entry.items) == 1 or key in head["registry"]):
            raw["__head__"] = _registry_choice(first, head["registry"], head["what"], section, ctx)
            if len(entry.items) > 1:  # optimizer sgd(lr=0.1) momentum 0.9
                ctx.out.add(Diagnostic(f"unexpected {entry.items[1].text!r} after the {head['what']}",
                                             entry.items[1].span,
                                             help=f"options of {key} go inside its call, {key}(name=value, ...); "
                                                  "other settings follow a comma"))
        else:
            choices = list(keys) + (list(head["registry"]) if head else [])
            ctx.out.add(unknown(first.span, f"{section} setting", first.text, choices))
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


def entries(stmt: Statement):
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
    return validate(model, raw, what, None, spans, ctx.out.errors)


# ---------------------------------------------------------------- sections


def _init(stmt: Statement | None, ctx: Ctx) -> tuple[InitRule, ...]:
    rules = [InitRule("weights", Choice("auto", INITIALIZERS["auto"].params())),
             InitRule("bias", Choice("constant", INITIALIZERS["constant"].params()))]
    if stmt is None:
        return tuple(rules)
    for entry in entries(stmt):
        items = list(entry.items)
        layer = None
        if items[0].kind == "word" and items[0].value not in ("weights", "bias") and len(items) > 1:
            layer = items.pop(0)
        if not items or items[0].kind != "word" or items[0].value not in ("weights", "bias"):
            ctx.out.add(Diagnostic("an init rule reads `weights INIT`, `bias INIT [before ACTIVATION]` "
                                         "or `LAYER weights INIT`", entry.span))
            continue
        target = items.pop(0).value
        if not items:
            ctx.out.add(Diagnostic(f"init: {target} needs an initializer", entry.span,
                                         help="one of: " + ", ".join(sorted(INITIALIZERS))))
            continue
        choice = _registry_choice(items.pop(0), INITIALIZERS, "initializer", f"init.{target}", ctx)
        before = None
        if items:
            if items[0].kind == "word" and items[0].value == "before" and len(items) == 2 and items[1].kind == "word":
                before = items[1].value
                if LAYERS.get(before) is None or not LAYERS[before].activation:
                    acts = [k for k, d in LAYERS.items() if d.activation]
                    ctx.out.add(unknown(items[1].span, "activation", before, acts))
            else:
                ctx.out.add(Diagnostic(f"unexpected {items[0].text!r} in an init rule", items[0].span,
                                             help="a rule may end with `before ACTIVATION`, e.g. before relu"))
        if choice:
            rules.append(InitRule(target, choice, layer.value if layer else None, before,
                                  layer.span if layer else entry.span))
    return tuple(rules)


def _losses(stmt: Statement | None, ctx: Ctx) -> tuple[Choice | None, tuple[OutputLoss, ...]]:
    """`loss cross_entropy` (every output), or one entry per output: `loss main cross_entropy,
    aux cross_entropy weight 0.3`. Returns (the loss written without an output, the named ones);
    the outputs' names are checked against the model in `output_losses`."""
    if stmt is None:
        return Choice("cross_entropy", LOSSES["cross_entropy"].params()), ()
    given = list(entries(stmt))
    if len(given) == 1 and len(given[0].items) == 1:
        return _registry_choice(given[0].items[0], LOSSES, "loss", "loss", ctx), ()
    if not given or any(e.items[0].kind not in ("word", "call") for e in given):
        ctx.out.add(Diagnostic("loss takes one loss", stmt.span,
                               help="one of: " + ", ".join(sorted(LOSSES)) + "; or one per output: OUTPUT LOSS [weight W]"))
        return None, ()
    every, named = None, []
    for e in given:
        items = list(e.items)
        out = None
        if len(items) > 1 and items[0].kind == "word" and items[0].value not in LOSSES and items[0].value != "weight":
            out = items.pop(0)
        weight = 1.0
        if len(items) == 3 and items[1].kind == "word" and items[1].value == "weight":
            w = ctx.conv.plain(items[2], f"loss.{out.value if out else 'weight'}.weight")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                ctx.out.add(Diagnostic(f"a loss weight is a number >= 0, got {format_value(w)}", items[2].span))
            else:
                weight = float(w)
            items = items[:1]
        if len(items) != 1:
            ctx.out.add(Diagnostic("a loss entry reads `LOSS`, or `OUTPUT LOSS [weight W]` for one output of several",
                                   e.span, help="loss main cross_entropy, aux cross_entropy weight 0.3"))
            continue
        path = f"loss.{out.value}" if out else "loss"
        choice = _registry_choice(items[0], LOSSES, "loss", path, ctx)
        if choice is None:
            continue
        if out is None:
            if every is not None:
                ctx.out.add(Diagnostic("two losses for every output: name the output of each", e.span))
            every = OutputLoss("", choice, weight, e.span)
        elif out.value in {o.output for o in named}:
            ctx.out.add(Diagnostic(f"output '{out.value}' has two losses", out.span))
        else:
            named.append(OutputLoss(out.value, choice, weight, out.span))
    return every, tuple(named)


def output_losses(every, named: tuple[OutputLoss, ...], model, ctx: Ctx) -> tuple[Choice | None, tuple[OutputLoss, ...]]:
    """One OutputLoss per output of the model, in the outputs' order, and the first's loss (the
    `loss` the rest of nnc reads). A loss written without an output applies to every output
    that has none of its own; an output left without a loss is an error."""
    if isinstance(every, Choice):  # the one-loss form: weight 1 on every output
        every = OutputLoss("", every, 1.0, every.span)
    if model is None or every is None and not named:  # (a loss that did not read is reported already)
        return (every.choice if every else None), ()
    names = [o.name for o in model.outputs]
    for o in named:
        if o.output not in names:
            ctx.out.add(unknown(o.span, "output", o.output, names))
    out = []
    for name in names:
        got = next((o for o in named if o.output == name), None) or (replace(every, output=name) if every else None)
        if got is None:
            ctx.out.add(Diagnostic(f"output '{name}' has no loss", ctx.spans.get("loss"),
                                   help=f"add `{name} LOSS [weight W]` to the loss section (weight 0 leaves it untrained)"))
            return None, ()
        out.append(got)
    return out[0].choice, tuple(out)


def _optimizer(stmt: Statement | None, ctx: Ctx) -> OptimizerSpec | None:
    if stmt is None:
        return OptimizerSpec(Choice("sgd", OPTIMIZERS["sgd"].params(lr=0.01, momentum=0.9)))
    raw = _keyed(stmt, "optimizer", {"lr_mult": None, "decay_mult": None}, ctx,
                 head={"registry": OPTIMIZERS, "what": "optimizer"})
    choice = raw.get("__head__")
    if "__head__" not in raw:
        ctx.out.add(Diagnostic("optimizer: which optimizer?", stmt.span, help="one of: " + ", ".join(sorted(OPTIMIZERS))))
    mults = {}
    for key in ("lr_mult", "decay_mult"):
        value = raw.get(key, {})
        if not isinstance(value, dict) or value.get("__args__"):  # (`lr_mult 0` too)
            ctx.out.add(Diagnostic(f"{key} reads {key}(LAYER=FACTOR, ...)", ctx.spans.get(f"optimizer.{key}")))
            value = {}
        for layer, f in value.items():
            if f is not REPORTED and (not isinstance(f, (int, float)) or isinstance(f, bool) or f < 0):
                ctx.out.add(Diagnostic(f"{key} for {layer} must be a number >= 0, got {format_value(f)}",
                                             ctx.spans.get(f"optimizer.{key}.{layer}")))
        mults[key] = {k: float(v) for k, v in value.items() if isinstance(v, (int, float))}
    if choice and choice.kind == "lbfgs" and mults["lr_mult"]:
        ctx.out.add(Diagnostic("lbfgs has one learning rate for all layers: lr_mult cannot apply",
                                     ctx.spans.get("optimizer.lr_mult"), help="freeze layers instead, or use sgd/adam"))
    return OptimizerSpec(choice, **mults) if choice else None


def _schedule(stmt: Statement | None, ctx: Ctx) -> ScheduleSpec | None:
    if stmt is None:
        return ScheduleSpec(Choice("constant", SCHEDULES["constant"].params()))
    main, warmup = None, None
    for entry in entries(stmt):
        v = entry.items[0]
        if len(entry.items) > 1:
            ctx.out.add(Diagnostic("one schedule per entry; separate them with commas", entry.items[1].span))
        if v.kind == "call" and v.value.name == "warmup" or v.kind == "word" and v.value == "warmup":
            if v.kind == "word":
                ctx.out.add(Diagnostic("warmup needs epochs=N or steps=N", v.span))
                continue
            raw = ctx.conv.plain(v, "schedule.warmup")
            raw = positional_to_fields(raw, Warmup, "warmup", v.span, ctx.out.errors)
            warmup = validate(Warmup, raw, "warmup", v.span, {k: kv.span for k, kv in v.value.kwargs}, ctx.out.errors,
                              key_spans=dict(zip((k for k, _ in v.value.kwargs), v.value.key_spans)), call="warmup")
            continue
        if main is not None:
            ctx.out.add(Diagnostic("only one main schedule (plus an optional warmup)", v.span))
            continue
        main = _registry_choice(v, SCHEDULES, "schedule", "schedule", ctx)
    return ScheduleSpec(main or Choice("constant", SCHEDULES["constant"].params()), warmup)


def _data(stmt: Statement | None, ctx: Ctx) -> DataSpec | None:
    if stmt is None:
        return DataSpec(Choice("digits", SOURCES["digits"].params()), 0.1, 0.2)
    keys = {k: None for k in DataOptions.model_fields} | {"preprocess": PREPROCESS, "augment": AUGMENT}
    raw = _keyed(stmt, "data", keys, ctx,
                 head={"registry": SOURCES, "what": "data source"})
    source = raw.get("__head__")
    if "__head__" not in raw:
        source = Choice("digits", SOURCES["digits"].params())
    steps = {k: raw.pop(k, ()) for k in ("preprocess", "augment")}
    for k in ("preprocess", "augment"):
        raw["__spans__"].pop(k, None)
    if source and source.kind == "imagefolder" and source.params.train is not None:
        for split in ("val", "test"):  # imagefolder(train=..., val=...) with `val 0.1` written too
            if getattr(source.params, split) and split in raw:
                ctx.out.add(Diagnostic(f"the {split} split is the folder imagefolder({split}=...): a fraction "
                                       f"`{split}` cannot apply too", raw["__spans__"].get(split, stmt.span),
                                       help=f"remove `{split}` here"))
    opts = _finish(raw, DataOptions, "data", ctx)
    if opts and opts.val + opts.test >= 1:
        ctx.out.add(Diagnostic(f"val {opts.val:g} + test {opts.test:g} leaves no training data",
                                     ctx.spans.get("data.test", stmt.span)))
    if source and opts:
        return DataSpec(source, opts.val, opts.test, steps["preprocess"], steps["augment"], opts.seed, opts.cache,
                        opts.workers, opts.max_bad)
    return None


def build(found: dict[str, Statement], ctx: Ctx) -> tuple:
    """Every section but the model block, defaults filled in where a section is absent:
    (init, loss, regularize, optimizer, schedule, data, train, the per-output losses)."""
    init = _init(found.get("init"), ctx)
    loss = _losses(found.get("loss"), ctx)
    reg_stmt = found.get("regularize")
    reg = _finish(_keyed(reg_stmt, "regularize", {k: None for k in Regularize.model_fields}, ctx), Regularize,
                  "regularize", ctx) if reg_stmt else Regularize()
    opt = _optimizer(found.get("optimizer"), ctx)
    sched = _schedule(found.get("schedule"), ctx)
    data = _data(found.get("data"), ctx)
    train_stmt = found.get("train")
    keys = {f.alias or n: None for n, f in Train.model_fields.items()}
    train = _finish(_keyed(train_stmt, "train", keys, ctx), Train, "train", ctx) if train_stmt else Train()
    return init, loss[0], reg, opt, sched, data, train, loss[1]
