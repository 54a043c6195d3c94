"""The model block: its input, one layer per line, `repeat` and `residual` blocks, names
(explicit or conv1, conv2, ...), each layer's options validated by its LayerDef."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any

from nnc.compiler.layers import LAYERS, STRUCTURE, Shape
from nnc.compiler.sections import Ctx
from nnc.compiler.spec import INPUTS, MAX_LAYERS, LayerNode, ModelSpec, Node, ResidualNode
from nnc.compiler.values import validate
from nnc.diagnostics import Diagnostic, Span, unknown
from nnc.grammar.parse import Statement


@dataclass
class _Draft:
    kind: str
    name: str | None
    raw: dict
    span: Span
    spans: dict[str, Span]
    body: list["_Draft"] | None = None  # residual blocks
    project: bool = False


def names_layer(kind: str, word: str) -> bool:
    """Whether a word right after layer word `kind` is the layer's name (`conv conv1 96`), not
    one of its options (`maxpool kernel 2`): the one rule the compiler and `nnc fmt` share."""
    d = LAYERS[kind]
    return word not in ("true", "false") and all(word != (f.alias or n) for n, f in d.params.model_fields.items())


def _layer_line(stmt: Statement, ctx: Ctx) -> _Draft | None:
    if len(stmt.entries) > 1:
        ctx.out.add(Diagnostic("one layer per line (no commas in the model block)", stmt.entries[1].span))
    items = list(stmt.entries[0].items)
    head = items.pop(0)
    kind = head.value
    d = LAYERS[kind]
    keys = {f.alias or n: f for n, f in d.params.model_fields.items()}
    name = None
    if items and items[0].kind == "word" and names_layer(kind, items[0].value):
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
                    ctx.out.add(Diagnostic(f"{kind}: {key} needs a value", v.span, help=f"write `{key} VALUE`"))
                    broken = True
                raw[key], spans[key] = True, v.span
                i += 1
                continue
            if key in raw:
                ctx.out.add(Diagnostic(f"{kind}: {key} is given twice", v.span.to(nxt.span)))
                i += 2
                continue
            raw[key] = ctx.conv.plain(nxt, f"model.{{name}}.{key}")
            spans[key] = nxt.span
            if key in positional:
                positional.remove(key)
            i += 2
        elif v.kind == "word":
            ctx.out.add(unknown(v.span, f"{kind} option", v.value, keys))
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
            ctx.out.add(Diagnostic(f"{kind}: unexpected value {v.text!r}", v.span,
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
                ctx.out.add(Diagnostic("repeat needs a count >= 1, e.g. repeat 3 { ... }", s.span))
                continue
            if s.block is None:
                ctx.out.add(Diagnostic("repeat needs a { ... } block of layers", s.span))
                continue
            errors = len(ctx.out.errors)
            once = _body(s.block, ctx, depth)
            n = items[1].value
            if not s.block:
                ctx.out.add(Diagnostic("repeat of an empty block", s.span, help="put layers inside { ... }"))
            elif len(ctx.out.errors) > errors:  # reported once; what is left of the block is not expanded
                continue
            elif _count(out) + n * _count(once) > MAX_LAYERS:
                ctx.out.add(Diagnostic(f"repeat {n:,} makes the model over {MAX_LAYERS:,} layers, "
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
                    ctx.out.add(Diagnostic(f"unexpected {v.text!r} after residual", v.span,
                                                 help="residual [NAME] [project] { ... }"))
            if not s.block:
                ctx.out.add(Diagnostic("residual needs a { ... } block of layers", s.span))
                continue
            out.append(_Draft("residual", name, {}, s.span, {}, _body(s.block, ctx, depth + 1), project))
        elif word == "input":
            ctx.out.add(Diagnostic("input must be the first line of the model block", s.span))
        elif word in LAYERS:
            if s.block is not None:
                ctx.out.add(Diagnostic(f"{word} takes no {{ ... }} block", s.span))
            d = _layer_line(s, ctx)
            if d:
                out.append(d)
        else:
            ctx.out.add(unknown(head.span, "layer", head.text, list(LAYERS) + list(STRUCTURE)))
    return out


def _count(drafts: list[_Draft]) -> int:
    """Layers after expansion: a recurrent layer with `layers N` is N of them."""
    def one(d: _Draft) -> int:
        n = d.raw.get("layers", 1)
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1

    return sum(_count(d.body) if d.body is not None else one(d) for d in drafts)


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
                ctx.out.add(Diagnostic(f"the layer name '{d.name}' may hold only letters, digits and _", d.span,
                                             help="'.' joins a block's name to its layers' (res1.conv1)"))
            if d.name:
                if d.name in seen:
                    ctx.out.add(Diagnostic(f"layer name '{d.name}' is used twice (first on line {seen[d.name].line})", d.span,
                                           related=((seen[d.name], f"'{d.name}' is first given here"),)))
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


def _validate_nodes(drafts: list[_Draft], ctx: Ctx, unnamed: dict[Span, list[int]]) -> tuple[Node, ...]:
    """`unnamed`: where each range of a layer is written -> its index in ctx.conv.ranges, until
    the first layer written there names it."""
    out: list[Node] = []
    for d in drafts:
        if d.kind == "residual":
            out.append(ResidualNode(d.name, d.project, _validate_nodes(d.body, ctx, unnamed), d.span))
            continue
        for k, s in d.spans.items():
            ctx.spans[f"model.{d.name}.{k}"] = s
        ranges = ctx.conv.ranges  # a layer's ranges were recorded before auto-naming: fill in its name
        for i in [i for s in d.spans.values() for i in unnamed.pop(s, ())]:
            ranges[i] = replace(ranges[i], path=ranges[i].path.replace("{name}", d.name or d.kind))
        params = validate(LAYERS[d.kind].params, d.raw, d.name if d.name else d.kind, d.span, d.spans, ctx.out.errors)
        if params is not None:
            out.append(LayerNode(d.kind, d.name, params, d.span, d.spans))
    return tuple(out)


def _input(stmt: Statement | None, block_span: Span, ctx: Ctx) -> tuple[Shape, Span] | None:
    example = "input image(3, 32, 32), vector(64), sequence(T, D) or tokens(T, vocabulary)"
    if stmt is None or stmt.head.value != "input":
        ctx.out.add(Diagnostic("the model block must start with its input", stmt.span if stmt else block_span,
                                     help=f"e.g. {example}"))
        return None
    items = stmt.entries[0].items
    if len(items) != 2 or items[1].kind != "call":
        ctx.out.add(Diagnostic("input reads KIND(dims...)", stmt.span, help=f"e.g. {example}"))
        return None
    call = items[1].value
    if call.name not in INPUTS:
        ctx.out.add(unknown(call.name_span, "input kind", call.name, INPUTS))
        return None
    dims = [a.value for a in call.args]
    names = INPUTS[call.name]
    if call.kwargs or len(dims) != len(names) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                       for x in dims):
        ctx.out.add(Diagnostic(f"{call.name} needs {len(names)} positive whole numbers ({', '.join(names)})",
                                     items[1].span))
        return None
    if call.name == "tokens":
        return Shape("tokens", (dims[0],), dims[1]), items[1].span
    return Shape(call.name, tuple(dims)), items[1].span


def model(stmt: Statement, ctx: Ctx) -> ModelSpec | None:
    items = stmt.entries[0].items
    name = items[1].value if len(items) > 1 and items[1].kind == "word" else "model"
    if len(items) > 2 or len(items) == 2 and items[1].kind != "word":
        ctx.out.add(Diagnostic("model reads `model NAME { ... }`", stmt.span))
    if stmt.block is None:
        ctx.out.add(Diagnostic("model needs a { ... } block: its input, then one layer per line", stmt.span))
        return None
    block = list(stmt.block)
    inp = _input(block[0] if block else None, stmt.span, ctx)
    drafts = _body(tuple(block[1:]), ctx)
    if _count(drafts) > MAX_LAYERS:  # (a repeat that crosses the limit is reported by _body)
        ctx.out.add(Diagnostic(f"the model has {_count(drafts):,} layers, more than nnc builds ({MAX_LAYERS:,})",
                                     stmt.span))
        drafts = []
    elif len(block) < 2 and inp:  # (layers that failed to read are reported as such)
        ctx.out.add(Diagnostic("the model has no layers", stmt.span))
    _name_all(drafts, ctx)
    unnamed: dict[Span, list[int]] = {}
    for i, r in enumerate(ctx.conv.ranges):
        if r.path.startswith("model.{name}."):
            unnamed.setdefault(r.span, []).append(i)
    nodes = _validate_nodes(drafts, ctx, unnamed)
    return ModelSpec(name, inp[0], inp[1], nodes) if inp else None
