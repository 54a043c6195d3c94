"""The model block: its inputs, one layer per line, blocks with parameters, `repeat`, `residual`,
`concat` / `add` (of branches, or `with` earlier outputs), `from`, `if` and `output`; names
(explicit, or conv1, conv2, ... per namespace) and every layer's options validated by its LayerDef.

Three passes: `_Expander` turns statements into a tree of drafts (block uses expanded with their
arguments put in place of their parameters, repeats copied), `_name_all` names every draft (a
block use is a namespace of its own: layer2.block1.conv1), and `_Emitter` walks the tree in order
into the flat list of LayerNodes the rest of the compiler reads, each with the values it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nnc.compiler.blocks import BlockDef, bound, is_key, substitute
from nnc.compiler.layers import LAYERS, STRUCTURE, Shape
from nnc.compiler.sections import Ctx
from nnc.compiler.spec import (DEFAULT_INPUT, DEFAULT_OUTPUT, INPUTS, MAX_LAYERS, GroupNode, InputNode, LayerNode,
                               ModelSpec, OutputNode, Use)
from nnc.compiler.values import validate
from nnc.diagnostics import Diagnostic, Span, closest, did_you_mean, unknown
from nnc.grammar.parse import Statement

MERGES = ("concat", "add")
GROUP_PREFIX = {"residual": "res", "branch": "branch", "concat": "cat", "add": "add"}


@dataclass
class _Draft:
    """A statement of the model block, expanded but not yet named."""

    kind: str  # a layer kind, or: residual, concat, add (a group, or `with` refs), branch, use, from, output
    name: str | None
    span: Span
    raw: dict = field(default_factory=dict)
    spans: dict[str, Span] = field(default_factory=dict)
    body: list["_Draft"] | None = None  # residual, branch, use; concat/add groups: their branches
    refs: list[tuple[str, Span]] = field(default_factory=list)  # `with` refs, `from`
    project: bool = False
    trace: tuple[Use, ...] = ()
    block: BlockDef | None = None  # a use: the block
    label: str = ""
    named: bool = False  # written with a name (an unnamed branch or merge group makes no level)

    @property
    def namespace(self) -> bool:
        """A block use or a named branch: its names are its own (auto names count from 1 again)."""
        return self.kind == "use" or self.kind == "branch" and self.named


def related(trace: tuple[Use, ...], span: Span | None = None, definition: Span | None = None
            ) -> tuple[tuple[Span, str], ...]:
    """The notes of a diagnostic inside expanded blocks: the line in the definition (when the
    diagnostic points at a use's argument instead), then each use, innermost first."""
    notes = []
    if definition is not None and span is not None and (definition.line != span.line or definition.doc is not span.doc):
        notes.append((definition, f"in the definition of block {trace[-1].block}"))
    for u in reversed(trace):
        notes.append((u.span, f"in block {u.block}, used here" + (f" as {u.path}" if u.path else "")))
    return tuple(notes)


def names_layer(kind: str, word: str) -> bool:
    """Whether a word right after layer word `kind` is the layer's name (`conv conv1 96`), not
    one of its options (`maxpool kernel 2`): the one rule the compiler and `nnc fmt` share
    (inside a block, a word that names one of its parameters is a value instead)."""
    d = LAYERS[kind]
    return word not in ("true", "false") and all(word != (f.alias or n) for n, f in d.params.model_fields.items())


class _Expander:
    """Statements -> drafts. `env`: the parameters of the block being expanded, bound to Values."""

    def __init__(self, ctx: Ctx, blocks: dict[str, BlockDef]):
        self.ctx, self.blocks = ctx, blocks
        self.count = 0  # layers expanded so far (a recurrent layer with `layers N` counts N)
        self.over = False  # MAX_LAYERS crossed: repeats and block uses are expanded no further
        self.reported = False  # ... and said so at the repeat that crossed it

    def error(self, span: Span | None, message: str, trace: tuple[Use, ...] = (), help: str | None = None,
              definition: Span | None = None) -> None:
        self.ctx.out.add(Diagnostic(message, span, help=help, related=related(trace, span, definition)))

    def body(self, stmts, env: dict, trace: tuple[Use, ...], in_group: bool = False) -> list[_Draft]:
        out: list[_Draft] = []
        for s in stmts:
            out += self.statement(s, env, trace, in_group)
        return out

    def statement(self, s: Statement, env: dict, trace: tuple[Use, ...], in_group: bool = False) -> list[_Draft]:
        head = s.head
        word = head.value if head.kind == "word" else None
        if word in ("repeat", "if"):
            return self.repeat(s, env, trace) if word == "repeat" else self.when(s, env, trace)
        if word == "residual":
            return self.residual(s, env, trace)
        if word in MERGES:
            return self.merge(s, env, trace)
        if word == "branch":
            if not in_group:
                self.error(s.span, "branch goes inside a concat or add block", trace,
                           "concat { branch { ... } branch { ... } }")
                return []
            return self.branch(s, env, trace)
        if word in ("from", "output"):
            return self.pointer(s, word, env, trace)
        if word == "input":
            self.error(s.span, "inputs are declared at the top of the model block", trace)
            return []
        if word in self.blocks:
            return self.use(s, env, trace)
        if word in LAYERS:
            if s.block is not None:
                self.error(s.span, f"{word} takes no {{ ... }} block", trace)
            d = self.layer_line(s, env, trace)
            return [d] if d else []
        self.ctx.out.add(unknown(head.span, "layer", head.text, [*LAYERS, *STRUCTURE, *self.blocks]))
        return []

    def _count(self, n: int) -> None:
        """Count `n` more layers; past MAX_LAYERS, repeats and block uses stop expanding."""
        self.count += n
        self.over |= self.count > MAX_LAYERS

    def repeat(self, s: Statement, env: dict, trace) -> list[_Draft]:
        items = [substitute(v, env) for v in s.entries[0].items]
        if len(items) != 2 or items[1].kind != "number" or not isinstance(items[1].value, int) or items[1].value < 1:
            self.error(s.span, "repeat needs a count >= 1, e.g. repeat 3 { ... }", trace)
            return []
        if s.block is None:
            self.error(s.span, "repeat needs a { ... } block of layers", trace)
            return []
        if not s.block:
            self.error(s.span, "repeat of an empty block", trace, "put layers inside { ... }")
            return []
        errors, before = len(self.ctx.out.errors), self.count
        once = self.body(s.block, env, trace) if not self.over else []
        n = items[1].value
        if len(self.ctx.out.errors) > errors or self.over:  # reported once; the block is not expanded
            return []
        per = _size(once)
        if before + n * per > MAX_LAYERS:
            self.over = self.reported = True
            self.error(items[1].span, f"repeat {n:,} makes the model over {MAX_LAYERS:,} layers, more than nnc builds",
                       trace)
            return []
        self._count(per * (n - 1))
        names = _names_in(once)
        return [_copy(d, k + 1 if n > 1 else None, names) for k in range(n) for d in once]

    def when(self, s: Statement, env: dict, trace) -> list[_Draft]:
        items = [substitute(v, env) for v in s.entries[0].items[1:]]
        negate = bool(items) and items[0].kind == "word" and items[0].value == "not"
        items = items[1:] if negate else items
        if len(items) != 1 or items[0].kind != "word" or items[0].value not in ("true", "false"):
            self.error(s.span, "if reads `if FLAG { ... }` or `if not FLAG { ... }`, FLAG a block's true/false parameter",
                       trace)
            return []
        if s.block is None:
            self.error(s.span, "if needs a { ... } block of layers", trace)
            return []
        return self.body(s.block, env, trace) if (items[0].value == "true") != negate else []

    def residual(self, s: Statement, env: dict, trace) -> list[_Draft]:
        items = list(s.entries[0].items[1:])
        name, project, i = None, False, 0
        while i < len(items):
            v = items[i]
            if v.kind == "word" and v.value == "project":
                project = True
                nxt = substitute(items[i + 1], env) if i + 1 < len(items) else None
                if nxt is not None and nxt.kind == "word" and nxt.value in ("true", "false"):
                    project, i = nxt.value == "true", i + 1
            elif v.kind == "word" and name is None and not bound(v, env):
                name = v.value
            else:
                self.error(v.span, f"unexpected {v.text!r} after residual", trace, "residual [NAME] [project [FLAG]] { ... }")
            i += 1
        if not s.block:
            self.error(s.span, "residual needs a { ... } block of layers", trace)
            return []
        body = self.body(s.block, env, trace)
        return [_Draft("residual", name, s.span, body=body, project=project, trace=trace, named=True,
                       label="residual project" if project else "residual")]

    def merge(self, s: Statement, env: dict, trace) -> list[_Draft]:
        """`concat [NAME] with A B` (A, B, then the current value) or `concat [NAME] { branches }`."""
        kind = s.head.value
        items = list(s.entries[0].items[1:])
        words = [v.value if v.kind == "word" else None for v in items]
        name = None
        if items and words[0] not in (None, "with"):
            name = items.pop(0)
            words.pop(0)
        if "with" in words:
            if words[0] != "with" or len(items) < 2 or None in words or s.block is not None:
                self.error(s.span, f"{kind} reads `{kind} [NAME] with OUTPUT...` or `{kind} [NAME] {{ branches }}`", trace)
                return []
            refs = [(v.value, v.span) for v in items[1:]]
            return [_Draft(kind, name.value if name else None, s.span, refs=refs, trace=trace, named=bool(name),
                           label=f"{kind} with {' '.join(r for r, _ in refs)}")]
        if items or not s.block:
            self.error(items[0].span if items else s.span,
                       f"{kind} reads `{kind} [NAME] with OUTPUT...` or `{kind} [NAME] {{ branches }}`", trace,
                       "inside the block, each line is a branch: a layer, a block, or branch [NAME] { ... }")
            return []
        branches = []
        for b in s.block:
            got = self.statement(b, env, trace, in_group=True)
            if len(got) == 1 and got[0].kind == "branch":
                branches += got
            elif got:
                branches.append(_Draft("branch", None, b.span, body=got, trace=trace))
        if len(branches) < 2:
            self.error(s.span, f"{kind} of {len(branches)} branch: it needs two or more", trace,
                       "write an identity branch for the unchanged input: identity")
            return []
        return [_Draft(kind, name.value if name else None, s.span, body=branches, trace=trace, named=bool(name),
                       label=f"{kind} of {len(branches)} branches")]

    def branch(self, s: Statement, env: dict, trace) -> list[_Draft]:
        items = s.entries[0].items[1:]
        if len(items) > 1 or items and items[0].kind != "word" or s.block is None:
            self.error(s.span, "branch reads `branch [NAME] { ... }`", trace)
            return []
        body = self.body(s.block, env, trace)
        name = items[0].value if items else None
        return [_Draft("branch", name, s.span, body=body, trace=trace, named=bool(name), label="branch")]

    def pointer(self, s: Statement, word: str, env: dict, trace) -> list[_Draft]:
        items = s.entries[0].items[1:]
        if len(items) != 1 or items[0].kind != "word" or s.block is not None:
            self.error(s.span, f"{word} reads `{word} NAME`", trace,
                       "from OUTPUT continues from an earlier output" if word == "from" else
                       "output NAME marks the current value as an output of the model")
            return []
        if word == "output" and trace:
            self.error(s.span, "output marks an output of the model: write it in the model block, not in a block", trace)
            return []
        v = items[0]
        return [_Draft(word, v.value if word == "output" else None, s.span, refs=[(v.value, v.span)], trace=trace)]

    def use(self, s: Statement, env: dict, trace) -> list[_Draft]:
        """A block used like a layer: `basic b1 64 stride 2`."""
        b = self.blocks[s.head.value]
        if any(u.block == b.name for u in trace):
            chain = " -> ".join([*(u.block for u in trace), b.name])
            self.error(s.head.span, f"block {b.name} uses itself ({chain})", trace, "a block cannot contain itself",
                       definition=b.span)
            return []
        if s.block is not None:
            self.error(s.span, f"{b.name} takes no {{ ... }} block", trace)
        if len(s.entries) > 1:
            self.error(s.entries[1].span, "one block per line (no commas in the model block)", trace)
        name, args = b.arguments(s.entries[0].items[1:], env, self.ctx.out, related(trace), s.span)
        if args is None:
            return []
        if self.over:
            return []
        use = Use(b.name, "", s.span, b.span)  # (its path is known once every name is: _Emitter)
        label = b.label(args)
        inner = self.body(b.body, args, (*trace, use))
        return [_Draft("use", name.value if name else None, s.span, body=inner, trace=trace, block=b, label=label,
                       named=True)]

    def layer_line(self, stmt: Statement, env: dict, trace) -> _Draft | None:
        if len(stmt.entries) > 1:
            self.error(stmt.entries[1].span, "one layer per line (no commas in the model block)", trace)
        items = list(stmt.entries[0].items)
        head = items.pop(0)
        kind = head.value
        d = LAYERS[kind]
        if d.structural:
            self.error(head.span, f"{kind} is written as a structure", trace)
            return None
        keys = {f.alias or n: f for n, f in d.params.model_fields.items()}
        name = None
        first = items[0] if items else None
        if first is not None and first.kind == "word" and names_layer(kind, first.value) and not bound(first, env):
            name = items.pop(0)
        raw, spans, broken = self._options(kind, d, keys, items, env, trace)
        self._count(_layers(raw))
        return None if broken else _Draft(kind, name.value if name else None, stmt.span, raw, spans, trace=trace,
                                          named=bool(name))

    def _options(self, kind, d, keys, items, env, trace) -> tuple[dict, dict, bool]:
        """`key value` pairs and positional values of a layer line -> (raw, spans, broken)."""
        raw: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        positional = list(d.positional)
        i, broken = 0, False
        plain = lambda v, key: self.ctx.conv.plain(substitute(v, env), f"model.{{name}}.{key}")
        while i < len(items):
            v = items[i]
            if is_key(items, i, keys, env):
                key = v.value
                is_bool = keys[key].annotation is bool
                nxt = items[i + 1] if i + 1 < len(items) else None
                if nxt is None or (is_bool and nxt.kind == "word" and nxt.value in keys and not bound(nxt, env)):
                    if not is_bool:  # reported once: the layer is not validated further
                        self.error(v.span, f"{kind}: {key} needs a value", trace, f"write `{key} VALUE`")
                        broken = True
                    raw[key], spans[key] = True, v.span
                    i += 1
                    continue
                if key in raw:
                    self.error(v.span.to(nxt.span), f"{kind}: {key} is given twice", trace)
                    i += 2
                    continue
                raw[key], spans[key] = plain(nxt, key), substitute(nxt, env).span
                if key in positional:
                    positional.remove(key)
                i += 2
            elif v.kind == "word" and not bound(v, env) and v.value not in ("true", "false"):
                self.ctx.out.add(replace(unknown(v.span, f"{kind} option", v.value, keys), related=related(trace)))
                i += 1
                if i < len(items) and items[i].kind != "word":  # its value: no second error for it, and
                    close = closest(v.value, keys)  # a near
                    if close and close not in raw:  # miss stands for its key (no "needs kernel" too)
                        raw[close], spans[close] = plain(items[i], close), items[i].span
                        if close in positional:
                            positional.remove(close)
                    i += 1
            elif positional:
                key = positional.pop(0)
                raw[key], spans[key] = plain(v, key), substitute(v, env).span
                i += 1
            else:
                self.error(v.span, f"{kind}: unexpected value {substitute(v, env).text!r}", trace,
                           f"write options as `key value`, one of: {', '.join(keys) or '(none)'}")
                i += 1
        return raw, spans, broken


def _layers(raw: dict) -> int:
    n = raw.get("layers", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _size(drafts: list[_Draft]) -> int:
    """Layers after expansion: a recurrent layer with `layers N` is N of them."""
    return sum(_size(d.body) if d.body is not None else _layers(d.raw) for d in drafts)


def _names_in(drafts: list[_Draft]) -> set[str]:
    """Explicit names a repeat's body gives in its own namespace (not inside block uses)."""
    out = set()
    for d in drafts:
        if d.name:
            out.add(d.name)
        if d.body is not None and not d.namespace:
            out |= _names_in(d.body)
    return out


def _copy(d: _Draft, k: int | None, names: set[str]) -> _Draft:
    """A repeat's k-th copy: its names (and the references to them) get the suffix _k."""
    suffix = lambda n: f"{n}_{k}" if n and k and n in names else n
    body = None
    if d.body is not None:  # a block use's inside is its own namespace: copied unrenamed
        body = [_copy(b, None, set()) if d.namespace else _copy(b, k, names) for b in d.body]
    return replace(d, name=suffix(d.name), raw=dict(d.raw), body=body,
                   refs=[(suffix(r), s) for r, s in d.refs])


# ---------------------------------------------------------------- naming


def _name_all(drafts: list[_Draft], ctx: Ctx, root: bool) -> None:
    """Explicit names are unique in their namespace (the model, or one block use); the others
    become conv1, conv2, ..., res1, ...: a number already taken by an explicit name is skipped."""
    seen: dict[str, Span] = {}

    def explicit(ds):
        for d in ds:
            if d.name and d.kind not in ("from", "output"):
                if not d.name.isidentifier():
                    ctx.out.add(Diagnostic(f"the layer name '{d.name}' may hold only letters, digits and _", d.span,
                                           help="'.' joins a block's name to its layers' (res1.conv1)",
                                           related=related(d.trace)))
                if d.name in seen:
                    ctx.out.add(Diagnostic(f"layer name '{d.name}' is used twice (first on line {seen[d.name].line})",
                                           d.span, related=((seen[d.name], f"'{d.name}' is first given here"),
                                                            *related(d.trace))))
                seen[d.name] = d.span
            if d.body is not None and not d.namespace:
                explicit(d.body)

    explicit(drafts)
    counters: dict[str, int] = {}

    def auto(ds):
        for d in ds:
            wants = d.kind in LAYERS or d.kind in ("residual", "use") or d.kind in MERGES
            if not d.name and wants:
                prefix = d.block.name if d.kind == "use" else GROUP_PREFIX.get(d.kind) or LAYERS[d.kind].prefix
                while True:
                    counters[prefix] = counters.get(prefix, 0) + 1
                    if f"{prefix}{counters[prefix]}" not in seen:
                        break
                d.name = f"{prefix}{counters[prefix]}"
                seen[d.name] = d.span
            if d.body is not None and not d.namespace:
                auto(d.body)

    auto(drafts)
    for d in _walk(drafts):
        if d.namespace:
            _name_all(d.body, ctx, False)


def _walk(drafts):
    """Every draft of this namespace (not inside nested block uses), depth first."""
    for d in drafts:
        yield d
        if d.body is not None and not d.namespace:
            yield from _walk(d.body)


# ---------------------------------------------------------------- emitting the flat list


@dataclass
class _Scope:
    """A namespace while it is emitted: the names defined so far -> their values."""

    input: str  # what `input` refers to: the block's input (the model's first input at the root)
    names: dict[str, str] = field(default_factory=dict)
    later: dict[str, Span] = field(default_factory=dict)  # every name of the namespace -> where


def selectors(path: str, trace: tuple[Use, ...]) -> tuple[str, ...]:
    """The names an init / lr_mult / freeze / skip rule may use for the layer at `path`: the path
    and each of its prefixes (layer2, layer2.block1, ...), and, as before blocks existed, the
    bare names given in the model block itself (a layer inside residual res1 is `conv3` too)."""
    parts = path.split(".")
    root = len(trace[0].path.split(".")) if trace else len(parts)
    return tuple(dict.fromkeys([*(".".join(parts[:i]) for i in range(1, len(parts) + 1)), *parts[:root]]))


class _Emitter:
    def __init__(self, ctx: Ctx, inputs: list[InputNode]):
        self.ctx = ctx
        self.inputs = {i.name: i for i in inputs}
        self.nodes: list[LayerNode] = []
        self.groups: list[GroupNode] = []
        self.outputs: list[OutputNode] = []
        self.where: dict[Span, str] = {}  # the span of an option -> the path of the first layer written there

    def error(self, span, message, trace=(), help=None) -> None:
        self.ctx.out.add(Diagnostic(message, span, help=help, related=related(trace)))

    def resolve(self, ref: str, span: Span, scope: _Scope, trace) -> str | None:
        if ref in scope.names:
            return scope.names[ref]
        if ref == "input" or not trace and ref in self.inputs:
            return scope.input if ref == "input" else ref
        if ref in scope.later:
            self.error(span, f"'{ref}' is defined later (line {scope.later[ref].line}): a reference reads an "
                             "earlier output", trace)
        else:
            known = [*scope.names, "input", *(self.inputs if not trace else ())]
            hint = did_you_mean(ref, known)
            self.error(span, f"no output named '{ref}' before this line", trace,
                       hint or ("names of earlier layers and blocks: " + ", ".join(list(scope.names)[-6:])
                                if scope.names else None))
        return None

    def run(self, drafts: list[_Draft], scope: _Scope, cur: str, prefix: str, trace: tuple[Use, ...]) -> str:
        """Emit `drafts` reading `cur`; returns the value they end with."""
        for d in drafts:
            if d.kind in ("from", "output"):
                ref, span = d.refs[0]
                if d.kind == "from":
                    cur = self.resolve(ref, span, scope, trace) or cur
                elif d.name in {o.name for o in self.outputs}:
                    self.error(d.span, f"output '{d.name}' is given twice", trace)
                else:
                    self.outputs.append(OutputNode(d.name, cur, d.span))
            elif d.kind == "use":
                cur = self.use(d, scope, cur, prefix, trace)
            elif d.kind == "residual":
                cur = self.residual(d, scope, cur, prefix, trace)
            elif d.kind in MERGES:
                cur = self.merge(d, scope, cur, prefix, trace)
            else:
                cur = self.layer(d, (cur,), prefix, trace) or cur
            if d.name and d.kind not in ("from", "output"):
                scope.names[d.name] = cur
        return cur

    def layer(self, d: _Draft, sources: tuple[str, ...], prefix: str, trace, **extra) -> str | None:
        path = prefix + d.name
        for k, s in d.spans.items():
            self.ctx.spans.setdefault(f"model.{path}.{k}", s)
            self.where.setdefault(s, path)
        errors: list[Diagnostic] = []
        params = validate(LAYERS[d.kind].params, d.raw, d.name, d.span, d.spans, errors)
        definition = trace[-1].definition if trace else None
        for e in errors:
            self.ctx.out.add(replace(e, related=related(trace, e.span, d.span if definition else None)))
        if params is None:
            return None
        self.nodes.append(LayerNode(d.kind, d.name, params, d.span, d.spans, path, sources, trace,
                                    selectors(path, trace), **extra))
        return path

    def use(self, d: _Draft, scope: _Scope, cur: str, prefix: str, trace) -> str:
        path = prefix + d.name
        inner_trace = (*trace, Use(d.block.name, path, d.span, d.block.span))
        inner = _Scope(cur, later={x.name: x.span for x in _walk(d.body) if x.name})
        out = self.run(d.body, inner, cur, path + ".", inner_trace)
        self.groups.append(GroupNode("block", d.name, path, d.span, d.label, cur, out, trace, d.block.span))
        return out

    def residual(self, d: _Draft, scope: _Scope, cur: str, prefix: str, trace) -> str:
        path = prefix + d.name
        out = self.run(d.body, scope, cur, path + ".", trace)
        merge = _Draft("add", d.name, d.span, trace=trace)
        self.layer(merge, (out, cur), prefix, trace, project=d.project)
        self.groups.append(GroupNode("residual", d.name, path, d.span, d.label, cur, path, trace))
        return path

    def merge(self, d: _Draft, scope: _Scope, cur: str, prefix: str, trace) -> str:
        if d.body is None:  # `concat with a b`: the named outputs, then the current value
            refs = [self.resolve(r, s, scope, trace) for r, s in d.refs]
            if None in refs:
                return cur
            return self.layer(d, (*refs, cur), prefix, trace) or cur
        inner = prefix + d.name + "." if d.named else prefix
        outs = []
        for b in d.body:
            bprefix = inner + b.name + "." if b.named else inner
            inside = _Scope(cur, later={x.name: x.span for x in _walk(b.body) if x.name}) if b.named else scope
            out = self.run(b.body, inside, cur, bprefix, trace)
            if b.named:
                self.groups.append(GroupNode("branch", b.name, inner + b.name, b.span, "branch", cur, out, trace))
                scope.names[b.name] = out
            outs.append(out)
        path = self.layer(replace(d, body=None), tuple(outs), prefix, trace) or cur
        if d.named:
            self.groups.append(GroupNode(d.kind, d.name, prefix + d.name, d.span, d.label, cur, path, trace))
        return path


# ---------------------------------------------------------------- the model block


def _input(stmt: Statement, ctx: Ctx, first: bool) -> InputNode | None:
    example = "input image(3, 32, 32), vector(64), sequence(T, D) or tokens(T, vocabulary); several: input NAME KIND(...)"
    items = stmt.entries[0].items
    name = DEFAULT_INPUT
    if len(items) == 3 and items[1].kind == "word":
        name = items[1].value
        if not name.isidentifier() or name in LAYERS or name in STRUCTURE:
            ctx.out.add(Diagnostic(f"'{name}' cannot name an input", items[1].span))
            return None
        items = (items[0], items[2])
    if len(items) != 2 or items[1].kind != "call" or len(stmt.entries) > 1 or stmt.block is not None:
        ctx.out.add(Diagnostic("input reads KIND(dims...)" + ("" if first else " or NAME KIND(dims...)"), stmt.span,
                               help=f"e.g. {example}"))
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
    shape = Shape("tokens", (dims[0],), dims[1]) if call.name == "tokens" else Shape(call.name, tuple(dims))
    return InputNode(name, shape, items[1].span)


def _inputs(block: list[Statement], stmt: Statement, ctx: Ctx) -> tuple[list[InputNode], int, bool]:
    """The input lines at the top of the block: (inputs, lines read, all read well)."""
    inputs, n, ok = [], 0, True
    while n < len(block) and block[n].head.kind == "word" and block[n].head.value == "input":
        got = _input(block[n], ctx, not n)
        ok &= got is not None
        if got and got.name in {i.name for i in inputs}:
            ctx.out.add(Diagnostic(f"input '{got.name}' is given twice", block[n].span,
                                   help="name each input: input image image(3, 32, 32) / input meta vector(8)"))
            ok = False
        inputs += [got] if got else []
        n += 1
    if n == 0:
        ctx.out.add(Diagnostic("the model block must start with its input", block[0].span if block else stmt.span,
                               help="e.g. input image(3, 32, 32), vector(64), sequence(T, D) or tokens(T, vocabulary)"))
        ok = False
    return inputs, n, ok


def _fill_range_paths(ctx: Ctx, where: dict[Span, str]) -> None:
    """A layer's search ranges were recorded before it was named: put its path in; a range in a
    block used several times is one range (one value for every use)."""
    seen, kept = set(), []
    for r in ctx.conv.ranges:
        if "{name}" in r.path:
            r = replace(r, path=r.path.replace("{name}", where.get(r.span, "layer")))
        key = (r.span, r.span.doc.name if r.span.doc else None)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    ctx.conv.ranges[:] = kept


def model(stmt: Statement, ctx: Ctx, blocks: dict | None = None) -> ModelSpec | None:
    items = stmt.entries[0].items
    name = items[1].value if len(items) > 1 and items[1].kind == "word" else "model"
    if len(items) > 2 or len(items) == 2 and items[1].kind != "word":
        ctx.out.add(Diagnostic("model reads `model NAME { ... }`", stmt.span))
    if stmt.block is None:
        ctx.out.add(Diagnostic("model needs a { ... } block: its input, then one layer per line", stmt.span))
        return None
    block = list(stmt.block)
    inputs, n, inputs_ok = _inputs(block, stmt, ctx)
    exp = _Expander(ctx, blocks or {})
    drafts = exp.body(tuple(block[n:]), {}, ())
    if len(block) <= n and inputs_ok:  # (layers that failed to read are reported as such)
        ctx.out.add(Diagnostic("the model has no layers", stmt.span))
    if exp.over and not exp.reported:
        ctx.out.add(Diagnostic(f"the model has {exp.count:,} layers, more than nnc builds ({MAX_LAYERS:,})", stmt.span))
    if exp.over:
        drafts = []
    _name_all(drafts, ctx, True)
    for d in _walk(drafts):
        if d.name in ("input", *(i.name for i in inputs)) and d.kind not in ("from", "output"):
            ctx.out.add(Diagnostic(f"the name '{d.name}' is an input's", d.span, help="give this layer another name"))
    if not inputs_ok:
        return None
    em = _Emitter(ctx, inputs)
    root = _Scope(inputs[0].name, later={d.name: d.span for d in _walk(drafts) if d.name})
    last = em.run(drafts, root, inputs[0].name, "", ())
    _fill_range_paths(ctx, em.where)
    outputs = tuple(em.outputs) or (OutputNode(DEFAULT_OUTPUT, last, stmt.span),)
    return ModelSpec(name, inputs[0].shape, inputs[0].span, tuple(em.nodes), tuple(inputs), outputs, tuple(em.groups))
