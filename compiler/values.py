"""Values with spans -> Python values, and Pydantic errors -> diagnostics (the Pydantic boundary).

Search ranges (`loguniform(1e-4, 1e-1)`, `uniform(a, b)`, `intuniform(a, b)`, `choice(...)`)
may stand for any numeric value; they are recorded with their span and replaced by a
representative value (the geometric or arithmetic midpoint, the first choice) so the
rest of the spec is still validated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from nnc.compiler.layers.base import Params
from nnc.diagnostics import Collector, Diagnostic, Span, closest, did_you_mean, unknown
from nnc.grammar.parse import Value

RANGES = ("loguniform", "uniform", "intuniform", "choice")


@dataclass(frozen=True)
class SearchRange:
    """A search range written in place of a value, with where it stands in the spec."""

    path: str  # e.g. optimizer.lr, model.drop1.p
    dist: str  # one of RANGES
    args: tuple[Any, ...]
    span: Span

    @property
    def log(self) -> bool:
        return self.dist == "loguniform"

    def representative(self) -> Any:
        if self.dist == "choice":
            return self.args[0]
        lo, hi = self.args
        if self.dist == "loguniform":
            return math.sqrt(lo * hi)
        mid = (lo + hi) / 2
        return round(mid) if self.dist == "intuniform" else mid


def resolve_text(text: str, values: dict[SearchRange, Any]) -> str:
    """The spec text with each range call replaced by its value (comments and layout kept)."""
    starts = [0]  # the offset of each line, counted as Lark counts lines (at \n only)
    for row in text.split("\n"):
        starts.append(starts[-1] + len(row) + 1)
    cuts = sorted(((starts[r.span.line - 1] + r.span.column - 1, starts[r.span.end_line - 1] + r.span.end_column - 1,
                    format_value(v)) for r, v in values.items()), reverse=True)
    for start, end, v in cuts:
        text = text[:start] + v + text[end:]
    return text


@dataclass(frozen=True)
class Choice:
    """A registry word with its validated parameters, e.g. sgd(lr=0.01)."""

    kind: str
    params: Params
    span: Span | None = None

    def __str__(self) -> str:
        args = ", ".join(f"{k}={format_value(v)}" for k, v in self.params.model_dump(by_alias=True).items()
                         if v is not None)
        return f"{self.kind}({args})" if args else self.kind


def format_value(v: Any) -> str:
    if isinstance(v, dict):  # a call, as Converter.call reads it
        return f"{v['kind']}(...)" if "kind" in v else "(...)"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(format_value(x) for x in v) + ")"
    if isinstance(v, str):
        return v if v.isidentifier() else f'"{v}"'
    return str(v).lower() if isinstance(v, bool) else str(v)


class _Reported:
    """Stands for a value whose error is already reported (a malformed search range), so that
    validation does not report it a second time as `must be a number, got None`."""

    def __repr__(self) -> str:
        return "<reported>"


REPORTED = _Reported()


def _reported(v: Any) -> bool:
    """`v` is, or holds, a value whose error is already reported."""
    if isinstance(v, (tuple, list)):
        return any(_reported(x) for x in v)
    return any(_reported(x) for x in v.values()) if isinstance(v, dict) else v is REPORTED


class _Bare:
    """A setting written without its value (`train epochs`): true for a flag, an error otherwise."""

    def __repr__(self) -> str:
        return "<no value>"


BARE = _Bare()


def _takes_bool(annotation) -> bool:
    import typing

    if annotation is bool or annotation is typing.Any:
        return True
    return any(_takes_bool(a) for a in typing.get_args(annotation) if not isinstance(a, (str, int, float)))


def _flags_and_bools(params: type[Params], raw: dict, what: str, span: Span | None, spans: dict[str, Span]
                     ) -> tuple[dict, list[Diagnostic]]:
    """Pydantic would read `true` (or a bare `epochs`) as 1 for a number: a flag is the only
    setting that may go without a value or take true/false."""
    raw, errors = dict(raw), []
    for name, f in params.model_fields.items():
        key = f.alias or name
        v = raw.get(key)
        if v is not BARE and not isinstance(v, bool):
            continue
        if _takes_bool(f.annotation):
            raw[key] = True if v is BARE else v
            continue
        import typing

        ann = next((a for a in typing.get_args(f.annotation) if a is not type(None)), f.annotation)  # X | None
        kind = {int: "a whole number", float: "a number", str: "a string"}.get(ann, "a value")
        msg = f"{what}: {key} needs a value" if v is BARE else f"{what} {key} must be {kind}, got {format_value(v)}"
        errors.append(Diagnostic(msg, spans.get(key, span), help=f"write `{key} VALUE`" if v is BARE else None))
        raw[key] = REPORTED
    return raw, errors


class Converter:
    """Turns Values into plain data, collecting search ranges and errors."""

    def __init__(self, out: Collector):
        self.ranges: list[SearchRange] = []
        self.out = out

    def plain(self, v: Value, path: str) -> Any:
        if v.kind == "tuple":
            return tuple(self.plain(x, f"{path}[{i}]") for i, x in enumerate(v.value))
        if v.kind != "call":
            if v.kind == "word" and v.value in ("true", "false"):
                return v.value == "true"
            if v.kind == "number" and not math.isfinite(v.value):
                self.out.add(Diagnostic("this number is too large for a float (it reads as infinity)", v.span))
                return REPORTED
            return v.value
        call = v.value
        if call.name in RANGES:
            return self._range(v, path)
        return self.call(call, path)

    def call(self, call, path: str) -> dict[str, Any]:
        """f(a, k=v) -> {"kind": "f", "args": [a], "k": v}; a keyword given twice is an error."""
        out: dict[str, Any] = {"kind": call.name, "args": [self.plain(a, f"{path}.{i}") for i, a in enumerate(call.args)]}
        key_spans = call.key_spans or tuple(kv.span for _, kv in call.kwargs)  # built by --set: no key spans
        for (key, kv), key_span in zip(call.kwargs, key_spans, strict=True):
            if key in out:
                self.out.add(Diagnostic(f"{call.name}: {key} is given twice", key_span.to(kv.span)))
                continue
            out[key] = self.plain(kv, f"{path}.{key}")
        return out

    def _range(self, v: Value, path: str) -> Any:
        call = v.value
        args = tuple(self.plain(a, path) for a in call.args)
        if call.kwargs:
            self.out.add(Diagnostic(f"{call.name} takes positional bounds only, e.g. {call.name}(1e-4, 1e-1)", v.span))
            return REPORTED
        bad = None
        if call.name == "choice":
            bad = None if args else "choice needs at least one value"
        elif len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            bad = f"{call.name} needs two numbers, e.g. {call.name}(1e-4, 1e-1)"
        elif args[0] >= args[1]:
            bad = f"{call.name} needs low < high, got {args[0]:g} >= {args[1]:g}"
        elif call.name == "loguniform" and args[0] <= 0:
            bad = f"loguniform needs positive bounds, got {args[0]:g}"
        elif call.name == "intuniform" and not all(isinstance(a, int) for a in args):
            bad = "intuniform needs integer bounds"
        if bad:
            self.out.add(Diagnostic(bad, v.span))
            return REPORTED
        r = SearchRange(path, call.name, args, v.span)
        self.ranges.append(r)
        return r.representative()


def positional_to_fields(raw: dict, params: type[Params], kind: str, span: Span | None, errors: list) -> dict:
    """Map a call's positional `args` onto the parameter fields in declaration order."""
    raw = dict(raw)
    args = raw.pop("args", [])
    raw.pop("kind", None)
    names = [f.alias or n for n, f in params.model_fields.items()]
    if len(args) > len(names):
        errors.append(Diagnostic(f"{kind} takes at most {len(names)} positional value(s), got {len(args)}", span))
        args = args[: len(names)]
    for name, a in zip(names, args):
        if name in raw:
            errors.append(Diagnostic(f"{kind}: {name} given twice", span))
        raw[name] = a
    return raw


def describe_error(e: dict, what: str) -> tuple[str, str | None]:
    """One Pydantic error -> (message, help), by its `type` code (never its English text)."""
    loc = [str(x) for x in e["loc"] if not isinstance(x, int)]
    field = ".".join(loc)
    subject = f"{what} {field}".strip() if field else what
    t, ctx, got = e["type"], e.get("ctx", {}), e.get("input")
    shown = format_value(got) if not isinstance(got, dict) else "a call"
    bounds = {"greater_than": f"> {format_value(ctx.get('gt'))}", "greater_than_equal": f">= {format_value(ctx.get('ge'))}",
              "less_than": f"< {format_value(ctx.get('lt'))}", "less_than_equal": f"<= {format_value(ctx.get('le'))}"}
    if t in bounds:
        return f"{subject} must be {bounds[t]}, got {shown}", None
    if t in ("int_type", "int_parsing", "int_from_float"):
        if isinstance(got, float) and got.is_integer():  # `dense 10.0`: a float, though format_value shows 10
            return f"{subject} must be a whole number, got {got!r}", f"write it without a decimal point: {int(got)}"
        return f"{subject} must be a whole number, got {shown}", None
    if t in ("float_type", "float_parsing"):
        return f"{subject} must be a number, got {shown}", None
    if t in ("bool_type", "bool_parsing"):
        return f"{subject} must be true or false, got {shown}", None
    if t in ("string_type",):
        return f"{subject} must be a string, got {shown}", None
    if t == "literal_error":
        return f"{subject} must be {ctx.get('expected')}, got {shown}", did_you_mean(str(got), _literal(ctx))
    if t == "missing":
        return f"{what} needs `{field}`", None
    if t in ("tuple_type", "too_short", "too_long"):
        return f"{subject} has the wrong number of values, got {shown}", None
    if t == "value_error":
        return f"{what}: {ctx.get('error', e['msg'])}", None
    return f"{subject}: {e['msg']}", None


def _literal(ctx: dict) -> list[str]:
    return [w.strip(" '") for w in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]


def _example(params: type[Params], name: str) -> str:
    """A plausible value for a required field, for `e.g. multistep(at=(30, 60))`."""
    field = next((f for n, f in params.model_fields.items() if (f.alias or n) == name), None)
    ann = str(getattr(field, "annotation", ""))
    return next((ex for word, ex in (("tuple", "(30, 60)"), ("int", "10"), ("float", "0.1"), ("str", '"PATH"'))
                 if word in ann), "VALUE")


def _tuple_form(params: type[Params], loc: list[str]) -> str | None:
    """How a tuple-valued field is written, from its annotation: `3 or 3x3`, `(30, 60)`, names."""
    import typing

    ann = None
    for key in loc:  # through nested settings: finetune.skip
        if ann is not None:
            params = next((a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, Params)), None)
            if params is None:
                return None
        field = next((f for n, f in params.model_fields.items() if (f.alias or n) == key), None)
        ann = field.annotation if field else None
        if ann is None:
            return None
    while ann is not None and typing.get_origin(ann) is not tuple:
        inner = [a for a in typing.get_args(ann) if a is not type(None) and not isinstance(a, (str, int, float))]
        ann = inner[0] if inner else None  # through Annotated[...] and X | None
    if ann is None:
        return None
    args = typing.get_args(ann)
    if Ellipsis not in args:
        return "one number or HxW, like 3 or 3x3" if len(args) == 2 else f"{len(args)} values"
    return "one or more names, like fc8 or (fc7, fc8)" if str in args else "a tuple, like (30, 60)"


def validate(params: type[Params], raw: dict, what: str, span: Span | None, spans: dict[str, Span],
             errors: list[Diagnostic], key_spans: dict[str, Span] | None = None, call: str | None = None
             ) -> Params | None:
    """Validate `raw` against `params`; errors point at the span of the field they concern.

    `key_spans` are where keyword names are written (an unknown option points at its name, a bad
    value at its value); `call` is the word of a call `f(k=v)`, for examples in the help. One
    unknown option together with one missing field is one mistake, reported once at the option.
    """
    key_spans = key_spans or {}
    raw, reported = _flags_and_bools(params, raw, what, span, spans)
    errors.extend(reported)
    try:
        validated = params.model_validate(raw)
        return None if reported else validated
    except ValidationError as err:
        errs = err.errors()
        names = [f.alias or n for n, f in params.model_fields.items()]
        extra = [e for e in errs if e["type"] == "extra_forbidden"]
        missing = [e for e in errs if e["type"] == "missing" and len(e["loc"]) == 1]
        merged = None
        if len(extra) == 1 and len(missing) == 1:
            bad, need = str(extra[0]["loc"][0]), str(missing[0]["loc"][0])
            shown = format_value(raw.get(bad)) if not isinstance(raw.get(bad), dict) else "..."
            hint = did_you_mean(bad, names)
            if hint != f"did you mean '{need}'?":
                hint = f"{what} needs `{need}`" + (f": did you mean {call}({need}={shown})?" if call else "")
            merged = Diagnostic(f"unknown {what} option '{bad}'", key_spans.get(bad, spans.get(bad, span)), help=hint,
                                fix=need if hint == f"did you mean '{need}'?" else None)
            errors.append(merged)
        for e in errs:
            if merged and (e is extra[0] or e is missing[0]):
                continue
            if _reported(e.get("input")):
                continue
            loc = [str(x) for x in e["loc"] if not isinstance(x, int)]
            if e["type"] == "extra_forbidden":
                d = unknown(key_spans.get(loc[0], spans.get(loc[0], span)), f"{what} option", loc[-1], names)
                errors.append(d)
                continue
            msg, help = describe_error(e, what)
            form = _tuple_form(params, loc) if loc and e["type"] in ("tuple_type", "too_short", "too_long") else None
            if form:
                got = e.get("input")
                msg = f"{what} {'.'.join(loc)} must be {form}, got {format_value(got) if not isinstance(got, dict) else 'a call'}"
            if e["type"] == "missing" and call and len(loc) == 1:
                help = f"e.g. {call}({loc[0]}={_example(params, loc[0])})"
            where = next((spans[k] for k in (".".join(loc[:i]) for i in range(len(loc), 0, -1)) if k in spans), span)
            fix = closest(str(e.get("input")), _literal(e.get("ctx") or {})) if e["type"] == "literal_error" else None
            d = Diagnostic(msg, where, help=help, fix=fix if isinstance(e.get("input"), str) else None)
            if d not in errors:  # `stride 0` read as (0, 0) fails twice, in the same words at the same place
                errors.append(d)
        return None
