"""`--set KEY=VALUE`: overrides applied to a spec's statements as if written in the file."""

from __future__ import annotations

from dataclasses import fields, replace

from nnc.compiler.sections import Ctx, entries
from nnc.compiler.spec import SECTIONS
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.schedules import SCHEDULES
from nnc.diagnostics import EXIT_USAGE, Diagnostic, NncError, Span
from nnc.grammar.parse import Call, Entry, Statement, Value, command_line_error, parse, parse_values

CALL_ENTRIES = {("optimizer", "lr_mult"), ("optimizer", "decay_mult"), ("schedule", "warmup"),
                ("train", "early_stop"), ("train", "finetune")}


def split_override(text: str) -> tuple[list[str], str]:
    """`--set optimizer.lr=3e-4` -> (["optimizer", "lr"], "3e-4"); a malformed one is command-line
    misuse (exit 2), found before any spec is read."""
    key, sep, value = text.partition("=")
    path = key.strip().split(".")
    if "\n" in text or "\r" in text:
        raise NncError(f"--set {text!r}: a --set is one line; give one --set per entry (--set train.batch=32 "
                       "--set train.epochs=3) or the section's entries comma-separated (--set 'train=batch 32, epochs 3')",
                       exit_code=EXIT_USAGE)
    if not sep or len(path) > 2 or not all(path) or path[0] not in SECTIONS or path[0] == "model":
        raise NncError(f"--set {text}: expected SECTION.KEY=VALUE or SECTION=ENTRIES with a section among "
                       f"{', '.join(s for s in SECTIONS if s != 'model')}, e.g. --set optimizer.lr=3e-4",
                       exit_code=EXIT_USAGE)
    return path, value


def apply_overrides(sections: dict[str, Statement], overrides: tuple[str, ...], ctx: Ctx) -> None:
    """`--set section.key=value`: replaces (or adds) one entry of a section, as if written there."""
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
        values = _unplace(parse_values(value, f"--set {text}"), f"--set {text}")
        v = values[0]
        stmt = sections.get(section)
        word = Value("word", field_, v.span)
        call_arg = section in ("optimizer", "loss") and not mult or section == "schedule" and field_ != "warmup"
        if len(values) > 1 and (call_arg or mult):
            raise NncError(Diagnostic(f"cannot read {value!r} as one value", v.span,
                                      help="write several values as a tuple, e.g. (30, 60)"))
        if call_arg:
            stmt = _set_call_arg(stmt, section, field_, v)
        else:
            if stmt is None and section == "optimizer":  # lr_mult / decay_mult on the default optimizer
                stmt = _set_call_arg(None, section, "momentum", Value("number", 0.9, v.span))
            # --set train.early_stop=off: drop the entry, back to its default (for most, off)
            off = len(values) == 1 and v.kind == "word" and v.value in ("off", "none")
            new = () if off else (Entry((v,) if mult and v.kind == "call" and v.value.name == field_
                                        else (word, *values), v.span),)
            if stmt is None:
                stmt = Statement((Entry((Value("word", section, v.span),), v.span), *new), None, v.span)
            else:
                kept = [e for e in entries(stmt) if not (e.items[0].kind in ("word", "call")
                                                          and e.items[0].text == field_)]
                stmt = Statement((Entry((stmt.head,), stmt.head.span), *kept, *new), None, stmt.span)
        sections[section] = stmt


def _unplace(node, origin: str):
    """Spans of --set text point into the command line, not the spec: replace them by one that
    names the --set (rendered instead of a file position)."""
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
    default = {"optimizer": "sgd", "loss": "cross_entropy", "schedule": "constant"}[section]
    given = list(entries(stmt)) if stmt else []
    main = next((e for e in given if len(e.items) == 1 and e.items[0].kind in ("word", "call")
                 and e.items[0].text != "warmup"), None)  # (not a number written there: its error is its own)
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
    rest = [e for e in given if e is not main]
    sec_word = stmt.head if stmt else Value("word", section, v.span)
    return Statement((Entry((sec_word,), sec_word.span), Entry((new_head,), new_head.span), *rest), None,
                     stmt.span if stmt else v.span)


def _params_of(section: str, kind: str):
    reg = {"optimizer": OPTIMIZERS, "loss": LOSSES, "schedule": SCHEDULES}[section]
    return reg[kind].params if kind in reg else None
