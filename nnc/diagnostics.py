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

    def to(self, other: "Span") -> "Span":
        return Span(self.line, self.column, other.end_line, other.end_column, self.origin)


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
    message: str
    span: Span | None = None
    document: Document | None = None
    help: str | None = None
    severity: str = "error"  # or "warning"
    fix: str | None = None  # the text that would replace the span (a did-you-mean): an editor's quick fix
    related: tuple[tuple[Span, str], ...] = ()  # other places that explain this one (where a name was first given)

    def sort_key(self):
        return (self.document.name if self.document else "", self.span or Span(0, 0, 0, 0))

    def as_json(self) -> dict:
        """For tools (`nnc check --json`): lines and columns 1-based, the end exclusive."""
        def where(s: Span | None):
            if s is None or s.origin or s.line <= 0:
                return None
            return {"start": {"line": s.line, "column": s.column}, "end": {"line": s.end_line, "column": s.end_column}}

        return {"file": self.document.name if self.document else None, "range": where(self.span),
                "origin": self.span.origin if self.span else None, "severity": self.severity,
                "message": self.message, "help": self.help, "fix": self.fix,
                "related": [{"range": where(s), "message": m} for s, m in self.related]}


class NncError(Exception):
    """One or more user errors. `exit_code` is one of the EXIT_* codes above."""

    def __init__(self, diagnostics: "Diagnostic | Iterable[Diagnostic] | str", exit_code: int = EXIT_USER):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.exit_code = exit_code
        super().__init__("\n".join(d.message for d in self.diagnostics))

    @classmethod
    def at(cls, span: Span | None, message: str, help: str | None = None) -> "NncError":
        return cls(Diagnostic(message, span, help=help))

    def with_document(self, document: Document) -> "NncError":
        """Attach `document` to every diagnostic that does not have one yet."""
        self.diagnostics = sorted((d if d.document else replace(d, document=document) for d in self.diagnostics),
                                  key=Diagnostic.sort_key)
        return self


@dataclass
class Collector:
    """Collects the diagnostics of one phase so that one typo does not hide five others."""

    document: Document | None = None
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def error(self, span: Span | None, message: str, help: str | None = None) -> None:
        self.errors.append(Diagnostic(message, span, self.document, help))

    def warn(self, span: Span | None, message: str, help: str | None = None) -> None:
        self.warnings.append(Diagnostic(message, span, self.document, help, "warning"))

    def add(self, diag: Diagnostic) -> None:
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


def render(diag: Diagnostic, color: bool = False) -> str:
    """`path:line:col: error: message`, the source line, a caret underline, and `help:`."""
    red, yellow, bold, cyan, reset = ("\033[31m", "\033[33m", "\033[1m", "\033[36m", "\033[0m") if color else ("",) * 5
    tone = red if diag.severity == "error" else yellow
    where = diag.document.name if diag.document else "nnc"
    if diag.span and diag.span.origin:
        where = diag.span.origin
    elif diag.span and diag.span.line > 0:
        where += f":{diag.span.line}:{diag.span.column}"
    # messages quote the user's text (a string value, a file name): never echo control characters raw
    out = [f"{bold}{printable(where)}:{reset} {tone}{diag.severity}:{reset} {_safe(diag.message)}"]
    if diag.span and diag.document and diag.span.line > 0 and not diag.span.origin:
        text = diag.document.line_text(diag.span.line).rstrip("\r")
        if text.strip():
            start = diag.span.column - 1
            end = diag.span.end_column - 1 if diag.span.end_line == diag.span.line else len(text)
            width = max(1, min(end, len(text)) - start)
            out.append("    " + printable(text.expandtabs(1)))
            out.append("    " + " " * start + tone + "^" + "~" * (width - 1) + reset)
    if diag.help:
        out.append(f"{cyan}help:{reset} {_safe(diag.help)}")
    return "\n".join(out)


def _safe(text: str) -> str:
    return "\n".join(printable(line) for line in text.split("\n"))


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
