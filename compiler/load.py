"""Statements -> a validated, immutable `Spec` (the schema stage of the pipeline).

Every section but `model` is optional; the defaults are documented in docs/language.md
and printed by `nnc show --resolved`. A file without a version line is read as
`nnspec 1`, the only version so far.
"""

from __future__ import annotations

from dataclasses import replace

from nnc.compiler import sections
from nnc.compiler.layers import LAYERS
from nnc.compiler.model_block import model as model_block
from nnc.compiler.overrides import apply_overrides
from nnc.compiler.sections import Ctx
from nnc.compiler.spec import SECTIONS, VERSION, Spec
from nnc.diagnostics import Diagnostic, Document, NncError, Span, closest, did_you_mean, lines
from nnc.grammar.parse import Statement, decode, parse

# ---------------------------------------------------------------- entry point


def _version(stmts: list[Statement], ctx: Ctx) -> int:
    first = None
    if stmts and stmts[0].head.kind == "word" and stmts[0].head.value == "nnspec":
        s = first = stmts.pop(0)
        items = s.entries[0].items
        if len(items) != 2 or items[1].kind != "number" or items[1].value != VERSION:
            got = " ".join(v.text for v in items[1:]) or "nothing"
            newer = len(items) == 2 and items[1].kind == "number" and items[1].value > VERSION
            ctx.out.add(Diagnostic(f"this nnc reads nnspec {VERSION}, the file says {got}", s.span,
                                         help="the file is for a newer nnc" if newer else
                                         f"the first line reads `nnspec {VERSION}` (or leave it out)"))
    for s in stmts:
        if s.head.kind == "word" and s.head.value == "nnspec":
            ctx.out.add(Diagnostic(f"nnspec is given twice (first on line {first.span.line})" if first
                                   else "the version line must come first", s.span))
    return VERSION


def build_spec(stmts: tuple[Statement, ...], document: Document, overrides: tuple[str, ...] = ()) -> Spec:
    ctx = Ctx.new()
    stmts = list(stmts)
    version = _version(stmts, ctx)
    found: dict[str, Statement] = {}
    for s in stmts:
        word = s.head.value if s.head.kind == "word" else s.head.text
        if word == "nnspec":  # a late version line: reported by _version
            continue
        if word not in SECTIONS:
            hint = did_you_mean(word, SECTIONS)
            if word in LAYERS:
                hint = "layers go inside the model { ... } block"
            ctx.out.add(Diagnostic(f"unknown section '{word}'", s.head.span,
                                   help=hint or "sections: " + ", ".join(SECTIONS),
                                   fix=closest(word, SECTIONS) if word not in LAYERS else None))
        elif word in found:
            ctx.out.add(Diagnostic(f"{word} is given twice (first on line {found[word].span.line})", s.head.span,
                                   related=((found[word].span, f"{word} is first given here"),)))
        else:
            found[word] = s
            ctx.spans[word] = s.span
    apply_overrides(found, overrides, ctx)
    ctx.spans.update({word: s.span for word, s in found.items()})  # a section --set whole names the --set
    misspelled_model = any(s.block is not None and s.head.text not in SECTIONS for s in stmts)
    if "model" not in found and not misspelled_model:  # `modle M {` is reported as an unknown section
        all_ = lines(document.text)
        where = Span(1, 1, 1, 2) if not stmts else Span(len(all_), 1, len(all_), len(all_[-1]) + 1)
        ctx.out.add(Diagnostic("no model block" if stmts else "empty spec: no model block", where,
                                     help="a spec needs at least: model NAME { input ...; layers }"))
    model = model_block(found["model"], ctx) if "model" in found else None
    try:
        parts = sections.build(found, ctx)
    except NncError as e:  # a block where a section takes none: reported, the others still checked
        ctx.out.extend(e)
    if ctx.out.errors:
        fractional = {r.span for r in ctx.conv.ranges if r.dist in ("uniform", "loguniform")}
        raise NncError([replace(d, help="uniform and loguniform draw fractions; intuniform(LOW, HIGH) draws whole numbers")
                        if d.span in fractional and "must be a whole number" in d.message else d
                        for d in ctx.out.errors]).with_document(document)
    return Spec(document, version, model, *parts, tuple(ctx.conv.ranges), tuple(overrides), ctx.spans)


def load_text(text: str, name: str = "<spec>", overrides: tuple[str, ...] = ()) -> Spec:
    return build_spec(parse(text, name), Document(name, text), tuple(overrides))


MAX_BYTES = 10_000_000  # a spec is a page or two: /dev/zero or a wrong file is read no further


def _read_at_most(f, name: str) -> bytes:
    data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise NncError(f"{name}: over 10 MB, too large for a spec")
    return data


def read_spec_text(path: str) -> str:
    """The spec file's text, or a user error naming the problem."""
    import sys
    from pathlib import Path

    if path == "-":  # `nnc check -`: the spec on standard input
        return decode(_read_at_most(sys.stdin.buffer, "<stdin>"), "<stdin>")
    if not path:
        raise NncError("the spec path is empty")
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()  # (a name too long for the system raises)
    except OSError as e:
        raise NncError(f"{path}: cannot read ({e.strerror})") from None
    if not exists:
        from nnc.compiler.library import library
        from nnc.diagnostics import closest

        near = closest(Path(path).stem, library()) if "/" not in path else None
        raise NncError(Diagnostic(f"{path}: no such file", help=f"the spec library has {near} (nnc specs lists it)"
                                  if near else None))
    if is_dir:
        raise NncError(f"{path}: is a directory, not a .nnspec file")
    try:
        with p.open("rb") as f:
            data = _read_at_most(f, path)
    except OSError as e:
        raise NncError(f"{path}: cannot read ({e.strerror})") from None
    return decode(data, path)


def load_spec(path: str, overrides: tuple[str, ...] = ()) -> Spec:
    """The spec in file `path` (`-`: standard input; a library name such as `alexnet` where no
    such file exists: the library's spec, compiler/library.py)."""
    import os

    path = str(path)
    if path != "-" and not os.path.exists(path):  # perhaps the name of a library spec
        from nnc.compiler.library import resolve

        path = resolve(path)
    return load_text(read_spec_text(path), "<stdin>" if path == "-" else path, tuple(overrides))
