"""User-facing diagnostics: source spans, the NncError family, and one renderer.

A user error (the spec, data, checkpoint or command line is wrong) is an `NncError`
carrying where and what; anything else that escapes is an internal bug. Foreign
exceptions (Lark, Pydantic, torch, onnx, onnxruntime) are converted into `NncError`
at exactly one boundary each, with `raise ... from None`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

# Exit codes (docs/architecture.md).
EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_DIVERGED, EXIT_SANITY = 0, 1, 2, 3, 4

MAX_SHOWN = 20  # "... and N more" after this many diagnostics of one phase


@dataclass(frozen=True, order=True)
class Span:
    """A 1-based, end-exclusive region of one document (line, column)."""

    line: int
    column: int
    end_line: int
    end_column: int
    # Text outside the spec that this span stands for (e.g. "--set optimizer.lr=-1"): printed
    # instead of the file's path and position.
    origin: str | None = field(default=None, compare=False)
    # The file it points into, where that is not the spec's own (a file the spec includes):
    # a diagnostic at this span names that file.
    doc: "Document | None" = field(default=None, compare=False, repr=False)

    def to(self, other: "Span") -> "Span":
        return Span(self.line, self.column, other.end_line, other.end_column, self.origin, self.doc)


def lines(text: str) -> list[str]:
    """The lines of `text` as Lark counts them: split at \n only (a \f, \x85 or U+2028 inside
    a line is not a line break), without the empty line after a final \n."""
    return (text[:-1] if text.endswith("\n") else text).split("\n")


@dataclass(frozen=True)
class Document:
    """The text a span points into, and the name printed for it (a path or `--set`)."""

    name: str
    text: str

    def line_text(self, line: int) -> str:
        all_ = lines(self.text)
        return all_[line - 1] if 0 < line <= len(all_) else ""


@dataclass(frozen=True)
class Diagnostic:
    """An error or warning about the user's input: where, what, and how to fix it."""

    message: str
    span: Span | None = None
    document: Document | None = None
    help: str | None = None
    severity: str = "error"  # or "warning"
    fix: str | None = None  # the text that would replace the span (a did-you-mean): an editor's quick fix
    # other places that explain this one: where a name was first given, the line in a block's
    # definition, the uses of the block; a span in another file than the diagnostic's carries it (Span.doc)
    related: tuple[tuple[Span, str], ...] = ()

    def __post_init__(self):
        if self.span is not None and self.span.doc is not None:  # a span in an included file names it
            object.__setattr__(self, "document", self.span.doc)

    def sort_key(self):
        return (self.document.name if self.document else "", self.span or Span(0, 0, 0, 0))

    def as_json(self) -> dict:
        """For tools (`nnc check --json`): lines and columns 1-based, the end exclusive."""
        def where(s: Span | None):
            if s is None or s.origin or s.line <= 0:
                return None
            return {"start": {"line": s.line, "column": s.column}, "end": {"line": s.end_line, "column": s.end_column}}

        def file(s: Span | None):
            doc = s.doc if s is not None and s.doc is not None else self.document
            return doc.name if doc else None

        return {"file": file(self.span), "range": where(self.span),
                "origin": self.span.origin if self.span else None, "severity": self.severity,
                "message": self.message, "help": self.help, "fix": self.fix,
                "related": [{"file": file(s), "range": where(s), "message": m} for s, m in self.related]}


class NncError(Exception):
    """One or more user errors. `exit_code` is one of the EXIT_* codes above."""

    def __init__(self, diagnostics: "Diagnostic | Iterable[Diagnostic] | str", exit_code: int = EXIT_USER):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = sorted(merge_repeats(diagnostics), key=Diagnostic.sort_key)
        self.exit_code = exit_code
        super().__init__("\n".join(d.message for d in self.diagnostics))

    @classmethod
    def at(cls, span: Span | None, message: str, help: str | None = None) -> "NncError":
        return cls(Diagnostic(message, span, help=help))

    def with_document(self, document: Document) -> "NncError":
        """Attach `document` to every diagnostic that does not have one yet."""
        self.diagnostics = sorted((d if d.document else replace(d, document=document) for d in self.diagnostics),
                                  key=Diagnostic.sort_key)
        self.diagnostics = [with_files(d, document) for d in self.diagnostics]
        return self


def with_files(d: Diagnostic, document: Document | None) -> Diagnostic:
    """`d` with `document` put on its related spans that name none (they are in the spec's own
    file: say so before the diagnostic itself may name an included one)."""
    if document is None or all(s.doc is not None for s, _ in d.related):
        return d
    return replace(d, related=tuple((s if s.doc else replace(s, doc=document), m) for s, m in d.related))


MAX_RELATED = 3  # notes under one diagnostic; "and N more" after them


def merge_repeats(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """One diagnostic per (message, place): the same mistake inside a block used three times is
    reported once, with the uses as its notes."""
    out: dict[tuple, Diagnostic] = {}
    for d in diags:
        key = (d.message, d.span, d.document.name if d.document else None, d.severity, d.help)
        if key in out and d.related:
            first = out[key]
            out[key] = replace(first, related=first.related + tuple(r for r in d.related if r not in first.related))
        else:
            out.setdefault(key, d)
    return list(out.values())


@dataclass
class Collector:
    """Collects the diagnostics of one phase so that one typo does not hide five others."""

    document: Document | None = None
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def error(self, span: Span | None, message: str, help: str | None = None, related: tuple = ()) -> None:
        self.add(Diagnostic(message, span, self.document, help, related=related))

    def warn(self, span: Span | None, message: str, help: str | None = None, related: tuple = ()) -> None:
        self.add(Diagnostic(message, span, self.document, help, "warning", related))

    def add(self, diag: Diagnostic) -> None:
        diag = with_files(diag, self.document)
        (self.errors if diag.severity == "error" else self.warnings).append(diag)

    def extend(self, err: NncError) -> None:
        if self.document:
            err.with_document(self.document)
        self.errors.extend(err.diagnostics)

    def raise_if_any(self) -> None:
        if self.errors:
            raise NncError(self.errors)


def printable(text: str) -> str:
    """`text` safe to echo to a terminal: control characters (escape sequences, line breaks of
    every kind) become U+FFFD, one character each, so caret columns still line up."""
    import unicodedata

    return "".join("\ufffd" if ch != "\t" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp")
                   else ch for ch in text)


def _located(severity: str, message: str, span: Span | None, document: Document | None, tone: str,
             bold: str, reset: str) -> list[str]:
    """`path:line:col: SEVERITY: message`, the source line and a caret underline."""
    where = document.name if document else "nnc"
    if span and span.origin:
        where = span.origin
    elif span and span.line > 0:
        where += f":{span.line}:{span.column}"
    # messages quote the user's text (a string value, a file name): never echo control characters raw
    out = [f"{bold}{printable(where)}:{reset} {tone}{severity}:{reset} {_safe(message)}"]
    if span and document and span.line > 0 and not span.origin:
        text = document.line_text(span.line).rstrip("\r")
        if text.strip():
            start = span.column - 1
            end = span.end_column - 1 if span.end_line == span.line else len(text)
            width = max(1, min(end, len(text)) - start)
            text, start, width = _window(text.expandtabs(1), start, width)
            out.append("    " + printable(text))
            out.append("    " + " " * start + tone + "^" + "~" * (width - 1) + reset)
    return out


ECHO_WIDTH = 160  # a longer source line is echoed as the part around the error, cut ends marked "..."


def _window(text: str, start: int, width: int) -> tuple[str, int, int]:
    """The part of a long source line around columns [start, start + width), as compilers show
    it: `...` where it was cut, the caret's start and width moved to match."""
    if len(text) <= ECHO_WIDTH:
        return text, start, width
    width = min(width, ECHO_WIDTH - 40)
    lo = max(0, min(start - 20, len(text) - ECHO_WIDTH))
    hi = lo + ECHO_WIDTH
    head, tail = ("..." if lo else ""), ("..." if hi < len(text) else "")
    return head + text[lo:hi] + tail, start - lo + len(head), width


def render(diag: Diagnostic, color: bool = False) -> str:
    """`path:line:col: error: message`, the source line, a caret underline, `help:`, and a `note:`
    with its own line for each related place (the use of the block the error is in)."""
    red, yellow, bold, cyan, reset = ("\033[31m", "\033[33m", "\033[1m", "\033[36m", "\033[0m") if color else ("",) * 5
    tone = red if diag.severity == "error" else yellow
    out = _located(diag.severity, diag.message, diag.span, diag.document, tone, bold, reset)
    for span, message in diag.related[:MAX_RELATED]:
        out += _located("note", message, span, span.doc or diag.document, cyan, bold, reset)
    if len(diag.related) > MAX_RELATED:
        out.append(f"{cyan}note:{reset} ... and {len(diag.related) - MAX_RELATED} more")
    if diag.help:
        out.append(f"{cyan}help:{reset} {_safe(diag.help)}")
    return "\n".join(out)


def _safe(text: str) -> str:
    """A message or help line safe to echo, with any word longer than LONG_WORD (a 5,000-character
    value the message quotes; not a path) cut to its start and its length."""
    import re

    def cut(m: re.Match) -> str:
        word = m.group()
        if "/" in word or "\\" in word:  # a file's path is said whole, however deep
            return word
        return f"{word[:LONG_WORD - 20]}... ({len(word):,} characters)"

    text = re.sub(rf"\S{{{LONG_WORD + 1},}}", cut, text)
    return "\n".join(printable(line) for line in text.split("\n"))


LONG_WORD = 100


def render_all(diags: list[Diagnostic], color: bool = False) -> str:
    shown = [render(d, color) for d in diags[:MAX_SHOWN]]
    if len(diags) > MAX_SHOWN:
        shown.append(f"... and {len(diags) - MAX_SHOWN} more")
    return "\n".join(shown)


def closest(word: str, choices: Iterable[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = closest(word, choices)
    return f"did you mean '{close}'?" if close else None


def unknown(span: Span | None, what: str, word: str, choices: Iterable[str]) -> Diagnostic:
    choices = sorted(set(choices))
    close = closest(word, choices)
    hint = f"did you mean '{close}'?" if close else None
    if hint is None and not choices:
        hint = "it takes none"
    elif hint is None and len(choices) <= 24:
        hint = "expected one of: " + ", ".join(choices)
    return Diagnostic(f"unknown {what} '{word}'", span, help=hint, fix=close)
