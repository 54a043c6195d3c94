"""Block definitions: `block NAME(PARAM, PARAM=DEFAULT, ...) { layers }` at the top of a file,
used in the model block like a layer word with arguments: `basic b1 64 stride 2`.

A block is expanded where it is used, its parameters replaced by the use's argument Values
(which keep the use's spans, so an error in an argument points at the use). Nothing here
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nnc.diagnostics import Collector, Diagnostic, Span, unknown
from nnc.grammar.parse import Call, Statement, Value

KEYWORDS = ("block", "include", "model", "input", "with", "not")


@dataclass(frozen=True)
class Param:
    """One parameter of a block definition."""

    name: str
    default: Value | None  # None: required
    span: Span

    @property
    def flag(self) -> bool:
        """A true/false parameter: written alone at a use, it means true."""
        d = self.default
        return d is not None and d.kind == "word" and d.value in ("true", "false")


@dataclass(frozen=True)
class BlockDef:
    """A `block NAME(...)` definition: its parameters and body."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Statement, ...]
    span: Span  # the `block NAME(...)` line

    def arguments(self, items, env: dict, out: Collector, notes: tuple[tuple[Span, str], ...], use: Span
                  ) -> tuple[Value | None, dict[str, Value] | None]:
        """The use's name (if written) and its arguments bound to the parameters, defaults filled
        in; (name, None) after reporting a mistake."""
        items = list(items)
        keys = {p.name: p for p in self.params}
        notes = (*notes, (self.span, f"block {self.name} is defined here"))
        err = lambda span, msg, help=None: out.add(Diagnostic(msg, span, help=help, related=notes))
        name = None
        if items and items[0].kind == "word" and items[0].value not in keys and not bound(items[0], env) \
                and items[0].value not in ("true", "false"):
            name = items.pop(0)
        args: dict[str, Value] = {}
        positional = [p.name for p in self.params]
        ok, i = True, 0
        while i < len(items):
            v = items[i]
            if is_key(items, i, keys, env):
                nxt = items[i + 1] if i + 1 < len(items) else None
                if nxt is None or nxt.kind == "word" and nxt.value in keys and not bound(nxt, env):
                    if not keys[v.value].flag:
                        err(v.span, f"{self.name}: {v.value} needs a value", f"write `{v.value} VALUE`")
                        ok = False
                    args[v.value] = Value("word", "true", v.span)
                    positional = [k for k in positional if k != v.value]
                    i += 1
                    continue
                if v.value in args:
                    err(v.span.to(nxt.span), f"{self.name}: {v.value} is given twice")
                    ok = False
                args[v.value] = substitute(nxt, env)
                positional = [k for k in positional if k != v.value]
                i += 2
            elif v.kind == "word" and not bound(v, env) and v.value not in ("true", "false"):
                out.add(replace(unknown(v.span, f"{self.name} parameter", v.value, keys), related=notes))
                ok = False
                i += 2 if i + 1 < len(items) and items[i + 1].kind != "word" else 1
            elif positional:
                args[positional.pop(0)] = substitute(v, env)
                i += 1
            else:
                err(v.span, f"{self.name} takes {len(self.params)} value(s): unexpected {substitute(v, env).text!r}",
                    f"{self.name}({', '.join(p.name for p in self.params)})")
                ok = False
                i += 1
        for p in self.params:
            if p.name not in args:
                if p.default is None:
                    err(use, f"{self.name} needs `{p.name}`",
                        f"e.g. {self.name} {' '.join(q.name.upper() for q in self.params if q.default is None)}")
                    ok = False
                else:
                    args[p.name] = p.default
        return name, args if ok else None

    def label(self, args: dict[str, Value]) -> str:
        """The use as the listing shows it: basic(64, stride=2)."""
        shown = [args[p.name].text if p.default is None else f"{p.name}={args[p.name].text}" for p in self.params
                 if p.default is None or args[p.name] is not p.default]
        return f"{self.name}({', '.join(shown)})" if shown else self.name


def bound(v: Value, env: dict) -> bool:
    return v.kind == "word" and v.value in env


def is_key(items, i: int, keys, env: dict) -> bool:
    """Is items[i] an option's key? A word that names an option, unless a block parameter of
    that name stands where a value does: `width stride stride` is the value `width`, then
    `stride` set to the parameter `stride`; `stride s` sets stride."""
    v = items[i]
    if v.kind != "word" or v.value not in keys:
        return False
    if not bound(v, env):
        return True
    nxt = items[i + 1] if i + 1 < len(items) else None
    return nxt is not None and (nxt.kind != "word" or nxt.value not in keys or nxt.value == v.value)


def substitute(v: Value, env: dict) -> Value:
    """`v` with the block's parameters replaced by their arguments (inside tuples and calls too)."""
    if not env:
        return v
    if v.kind == "word":
        return env.get(v.value, v)
    if v.kind == "tuple":
        return replace(v, value=tuple(substitute(x, env) for x in v.value))
    if v.kind == "call":
        c: Call = v.value
        return replace(v, value=replace(c, args=tuple(substitute(a, env) for a in c.args),
                                        kwargs=tuple((k, substitute(x, env)) for k, x in c.kwargs)))
    return v


def definition(stmt: Statement, out: Collector, taken: tuple[str, ...]) -> BlockDef | None:
    """`block NAME(PARAMS) { ... }` -> BlockDef, or None after reporting what is wrong.
    `taken`: the words a block may not be named (layer kinds, structure words, sections)."""
    items = stmt.entries[0].items
    form = "block NAME(PARAM, PARAM=DEFAULT, ...) { layers }"
    if len(stmt.entries) > 1 or len(items) != 2 or items[1].kind not in ("word", "call"):
        out.add(Diagnostic(f"a block reads `{form}`", stmt.span))
        return None
    head = items[1]
    name, name_span = (head.value, head.span) if head.kind == "word" else (head.value.name, head.value.name_span)
    if name in taken or name in KEYWORDS:
        out.add(Diagnostic(f"'{name}' is a word of the language: a block needs another name", name_span))
        return None
    if not name.isidentifier():
        out.add(Diagnostic(f"the block name '{name}' may hold only letters, digits and _", name_span))
        return None
    if not stmt.block:
        out.add(Diagnostic(f"block {name} needs a {{ ... }} body of layers", stmt.span, help=f"`{form}`"))
        return None
    params: list[Param] = []
    if head.kind == "call":
        call: Call = head.value
        for a in call.args:
            if a.kind != "word" or a.value in ("true", "false"):
                out.add(Diagnostic(f"block {name}: a parameter is a name, got {a.text!r}", a.span,
                                   help="give a default with NAME=VALUE"))
                continue
            params.append(Param(a.value, None, a.span))
        for (k, v), ks in zip(call.kwargs, call.key_spans or tuple(v.span for _, v in call.kwargs)):
            params.append(Param(k, v, ks))
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            out.add(Diagnostic(f"block {name}: parameter '{p.name}' is given twice", p.span))
        if p.name in ("input", "not", "with") or not p.name.isidentifier():
            out.add(Diagnostic(f"block {name}: '{p.name}' cannot name a parameter", p.span,
                               help="'input' names the block's input; parameters are letters, digits and _"))
        seen.add(p.name)
    return BlockDef(name, tuple(params), tuple(stmt.block), stmt.span)
