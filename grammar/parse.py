"""Text -> plain statements with source spans (the Lark boundary).

The grammar is deliberately generic (statements of entries of values); the compiler's
schemas give the words their meaning. Every node keeps its span for diagnostics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedInput, UnexpectedToken, v_args

from nnc.diagnostics import MAX_SHOWN, Diagnostic, Document, NncError, Span, lines, printable

# ---------------------------------------------------------------- plain data


@dataclass(frozen=True)
class Call:
    """`name(args, key=value)` as written."""

    name: str
    name_span: Span
    args: tuple["Value", ...]
    kwargs: tuple[tuple[str, "Value"], ...]
    key_spans: tuple[Span, ...] = ()  # where each keyword's name is written, parallel to kwargs


@dataclass(frozen=True)
class Value:
    """number: int|float, size: tuple[int, ...], string/word: str, call: Call, tuple: tuple[Value]."""

    kind: str
    value: Any
    span: Span

    def plain(self) -> Any:
        """The Python value with spans dropped (calls become {'kind': name, ...})."""
        if self.kind == "tuple":
            return tuple(v.plain() for v in self.value)
        if self.kind == "call":
            return {"kind": self.value.name, "args": [a.plain() for a in self.value.args],
                    **{k: v.plain() for k, v in self.value.kwargs}}
        return self.value

    @property
    def text(self) -> str:
        if self.kind == "tuple":  # as written, not the reprs of its Values
            return "(" + ", ".join(v.text + ("(...)" if v.kind == "call" else "") for v in self.value) + ")"
        if self.kind == "size":
            return "x".join(map(str, self.value))
        return self.value.name if self.kind == "call" else str(self.value)


@dataclass(frozen=True)
class Entry:
    """One comma-separated entry of a statement: its items."""

    items: tuple[Value, ...]
    span: Span


@dataclass(frozen=True)
class Statement:
    """One line's entries, with the block of statements that follows it, if any."""

    entries: tuple[Entry, ...]
    block: tuple["Statement", ...] | None
    span: Span  # the statement's first line, up to the block

    @property
    def head(self) -> Value:
        return self.entries[0].items[0]


# ---------------------------------------------------------------- parser


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("nnc.grammar").joinpath("nnspec.lark").read_text()
    # cache=True: the LALR tables are saved in the temp folder, keyed by the grammar (~40 ms saved per start)
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False, cache=True)


def lex(text: str):
    """Every token of `text` as the parser's lexer reads it, comments, line breaks (with the
    blank and comment lines they take in) and spacing included (`nnc fmt` lays a spec out from
    them; the parse tree keeps none of the three)."""
    return _parser().lex(text if text.endswith("\n") else text + "\n", dont_ignore=True)


def _span(meta_or_token) -> Span:
    m = meta_or_token
    return Span(m.line, m.column, m.end_line, m.end_column)


MAX_INT = 2**63 - 1  # sizes, counts and seeds are 64-bit integers in torch and ONNX


def _too_large(tree) -> list[Diagnostic]:
    """Whole numbers past 64 bits, found before they are converted (past 4,300 digits Python
    refuses to, and past 309 they overflow a float)."""
    out = []
    for tok in tree.scan_values(lambda t: isinstance(t, Token) and t.type in ("NUMBER", "SIZE")):
        digits = tok.split("x") if tok.type == "SIZE" else [tok.lstrip("+-")]
        if any(d.isdigit() and (len(d.lstrip("0")) > 19 or int(d.lstrip("0") or "0") > MAX_INT) for d in digits):
            out.append(Diagnostic("this whole number is too large", _span(tok),
                                  help=f"whole numbers go up to 2**63 - 1 ({MAX_INT:,})"))
    return out


def _number(text: str) -> int | float:
    """`1e3` is the whole number 1000 (a size may be written so); `1.0` and `5e-4` are floats."""
    try:
        return int(text)
    except ValueError:
        x = float(text)
        return int(x) if "." not in text and x.is_integer() and abs(x) < 2**53 else x


class _ToData(Transformer):
    """Rule name == method name; each returns the plain data above. `doc`: set on every span
    when the text is not the spec's own file (an included one), so diagnostics name it."""

    def __init__(self, doc: Document | None = None):
        super().__init__()
        self.doc = doc

    def _span(self, meta_or_token) -> Span:
        m = meta_or_token
        return Span(m.line, m.column, m.end_line, m.end_column, None, self.doc)

    def start(self, statements):
        return tuple(statements)

    @v_args(meta=True)
    def statement(self, meta, children):
        entries = tuple(c for c in children if isinstance(c, Entry))
        block = next((c for c in children if isinstance(c, list)), None)
        span = entries[0].span.to(entries[-1].span)
        return Statement(entries, tuple(block) if block is not None else None, span)

    def block(self, statements):
        return list(statements)

    @v_args(meta=True)
    def entry(self, meta, items):
        return Entry(tuple(items), items[0].span.to(items[-1].span))

    def number(self, tok):
        (t,) = tok
        return Value("number", _number(t), self._span(t))

    def size(self, tok):
        (t,) = tok
        # (leading zeros dropped: int() refuses 4,300 digits or more, zeros included)
        return Value("size", tuple(int(p.lstrip("0") or "0") for p in t.split("x")), self._span(t))

    def string(self, tok):
        (t,) = tok
        return Value("string", t[1:-1], self._span(t))

    def word(self, tok):
        (t,) = tok
        return Value("word", str(t), self._span(t))

    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        pos = tuple(a for a in args if isinstance(a, Value))
        kw = tuple(a for a in args if isinstance(a, tuple))
        return Value("call", Call(str(name), self._span(name), pos, tuple((k, v) for k, v, _ in kw),
                                  tuple(s for _, _, s in kw)), self._span(meta))

    def kwarg(self, children):
        key, value = children
        return (str(key), value, self._span(key))

    @v_args(meta=True)
    def tuple(self, meta, values):
        return Value("tuple", tuple(values), self._span(meta))


_TERMINALS = {
    "NUMBER": "a number", "SIZE": "a size like 3x3", "STRING": "a string", "WORD": "a word",
    "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','",
    "EQUAL": "'='", "_NL": "end of line", "$END": "end of file",
}


def _describe(terminal: str) -> str:
    return _TERMINALS.get(terminal, terminal.lower())


def _syntax_error(err: UnexpectedInput, text: str) -> Diagnostic:
    line, col = err.line if err.line > 0 else 1, err.column if err.column > 0 else 1
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        if ch in "\"'":
            return Diagnostic("this string is never closed", Span(line, col, line, col + 1),
                              help=f"a string ends with {ch} on the same line")
        hint = "words are ASCII letters, digits and _" if ch.isalpha() else None
        return Diagnostic(f"unexpected character {ch!r}", Span(line, col, line, col + 1), help=hint)
    assert isinstance(err, UnexpectedToken)
    tok: Token = err.token
    if tok.type == "$END":
        all_ = lines(text)
        line, col = len(all_), len(all_[-1]) + 1
        found, width = "end of file", 1
    else:
        found, width = (_describe(tok.type) if tok.type in ("_NL",) else repr(str(tok))), max(1, len(str(tok).split("\n")[0]))
    expected = sorted({_describe(t) for t in err.accepts or err.expected if not t.startswith("__")})
    hint = None
    if tok.type == "RBRACE" and _unclosed_brace(text[: tok.start_pos]) is None:
        return Diagnostic("this '}' closes no '{'", Span(line, col, line, col + 1),
                          help="every '{' ends a line, and its '}' is on a line of its own")
    before = lines(text)[line - 1][: col - 1].rstrip() if tok.type != "$END" else ""
    if before.endswith("{") and tok.type not in ("_NL", "RBRACE"):
        return Diagnostic(f"unexpected {found} after '{{'", Span(line, col, line, col + width),
                          help="a '{' ends its line: the block's lines go below it, and its '}' on a line of its own")
    if tok.type == "RBRACE" and before:
        return Diagnostic("'}' must be on a line of its own", Span(line, col, line, col + 1),
                          help="end the line before it")
    if "'}'" in expected and tok.type == "$END":
        opened = _unclosed_brace(text)
        if opened:
            return Diagnostic("this '{' is never closed", Span(*opened, opened[0], opened[1] + 1),
                              help="end the block with '}' on a line of its own")
        hint = "a '{' block is not closed"
    elif expected:
        hint = "expected " + (", ".join(expected[:-1]) + " or " + expected[-1] if len(expected) > 1 else expected[0])
    return Diagnostic(f"unexpected {found}", Span(line, col, line, col + width), help=hint)


MAX_DEPTH = 64  # nested blocks, and nested values; the Transformer recurses once per level


def _open_braces(text: str):
    """After each '{' or '}' (comments and strings skipped): the stack of (line, column) of the
    braces still open."""
    stack: list[tuple[int, int]] = []
    for n, line in enumerate(lines(text), 1):
        quote = None
        for c, ch in enumerate(line, 1):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "{}":
                if ch == "{":
                    stack.append((n, c))
                elif stack:
                    stack.pop()
                yield stack


def _unclosed_brace(text: str) -> tuple[int, int] | None:
    """(line, column) of the last '{' left open at the end of `text`."""
    stack: list = []
    for stack in _open_braces(text):
        pass
    return stack[-1] if stack else None


def _too_deep(text: str) -> Diagnostic | None:
    for stack in _open_braces(text) if text.count("{") > MAX_DEPTH else ():
        if len(stack) > MAX_DEPTH:
            line, col = stack[-1]
            return Diagnostic(f"blocks are nested more than {MAX_DEPTH} deep", Span(line, col, line, col + 1))
    depth = 0  # calls and tuples: the Transformer and the compiler recurse once per level too
    for n, line in enumerate(lines(text) if text.count("(") > MAX_DEPTH else (), 1):
        quote = None
        for c, ch in enumerate(line, 1):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch == "(":
                depth += 1
                if depth > MAX_DEPTH:
                    return Diagnostic(f"values are nested more than {MAX_DEPTH} deep", Span(n, c, n, c + 1))
            elif ch == ")" and depth:
                depth -= 1
        if not line.rstrip().endswith("\\"):  # a statement ends with its line
            depth = 0
    return None


def decode(data: bytes, name: str) -> str:
    """Bytes -> text, or an error at the first byte that is not UTF-8 text."""
    bad = data.find(b"\x00")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start if bad < 0 else min(bad, e.start)
        text = None
    if bad >= 0:
        kind = _known_binary(data, name)
        if kind:
            raise NncError(f"{name}: this is {kind}, not a spec; give the .nnspec file (a run keeps its spec as spec.nnspec)")
        before = data[:bad]
        line = before.count(b"\n") + 1
        start = before.rfind(b"\n") + 1
        end = data.find(b"\n", bad) if b"\n" in data[bad:] else len(data)
        head = data[start:bad].decode("utf-8")  # valid text up to the first bad byte
        col = len(head) + 1  # in characters, as the caret is drawn
        shown = printable(head + data[bad:end].decode("utf-8", "replace"))[:max(120, col + 40)]  # through the byte
        doc = Document(name, "\n" * (line - 1) + shown)
        raise NncError(Diagnostic("this is not a text file (binary data: byte 0x%02x)" % data[bad],
                                  Span(line, col, line, col + 1), doc,
                                  help="a .nnspec file is UTF-8 text")) from None
    text = text.removeprefix("\ufeff")  # the byte-order mark some Windows editors write
    # old Mac line ends (a lone CR) are line ends too; CRLF is read by the grammar as it is
    return re.sub(r"\r(?!\n)", "\n", text) if "\r" in text else text


def _known_binary(data: bytes, name: str) -> str | None:
    """The binary files nnc writes, named when they are given where a spec is read."""
    if data[8:10] == b'{"' and b"nnc-checkpoint" in data[:4096]:  # safetensors: 8-byte length, JSON header
        return "an nnc checkpoint"
    if name.endswith(".onnx") or data[:1] == b"\x08" and (b"\x12\x03nnc" in data[:64] or b"\x12\x07pytorch" in data[:64]):
        return "an ONNX model"
    return None


def parse(text: str, name: str = "<spec>", included: bool = False) -> tuple[Statement, ...]:
    """`included`: the text is a file the spec includes; its spans carry its Document."""
    doc = Document(name, text)
    if not text.endswith("\n"):
        text += "\n"
    if deep := _too_deep(text):
        raise NncError(deep).with_document(doc)
    errors: list[Diagnostic] = []
    while True:
        try:
            tree = _parser().parse(text)
            break
        except UnexpectedInput as e:
            errors.append(_syntax_error(e, text))
        text = _blank_line(text, errors)
        if text is None:
            break
    if errors or (errors := _too_large(tree)):
        raise NncError(errors).with_document(doc) from None
    return _ToData(doc if included else None).transform(tree)


def _blank_line(text: str, errors: list[Diagnostic]) -> str | None:
    """The text with the line of the last syntax error blanked, so the next parse finds the next
    error (a statement is one line); None where that could invent errors: a line with a brace (the
    blocks would change), the end of the file, the same line again, or enough errors shown."""
    line = errors[-1].span.line
    rows = text.split("\n")
    if (len(errors) >= MAX_SHOWN or not 0 < line < len(rows) or "{" in rows[line - 1] or "}" in rows[line - 1]
            or rows[line - 1].endswith("\\") or any(d.span.line == line for d in errors[:-1])):
        return None
    rows[line - 1] = ""
    return "\n".join(rows)


def command_line_error(err: NncError, text: str, name: str) -> NncError:
    """A syntax error in text from the command line (`--set KEY=TEXT`), named by `name`; its
    position would point into nnc's own rewrite of the text, so it is left out."""
    d = err.diagnostics[0]
    return NncError(Diagnostic(f"cannot read {text!r} as a value: {d.message}", Span(0, 0, 0, 0, name),
                               help="a value is a number, a word, a \"string\", a call f(...) or a tuple (a, b)"))


def parse_values(text: str, name: str = "--set") -> tuple[Value, ...]:
    """The values of one entry as written on the command line (`--set optimizer.lr=3e-4`,
    `--set init.bias="constant(1) before relu"`)."""
    try:  # after a number, so that a tuple is not read as a call of the word before it
        stmts = parse(f"x 0 {text}\n", name)
    except NncError as e:
        raise command_line_error(e, text, name) from None
    if len(stmts) != 1 or len(stmts[0].entries) != 1 or stmts[0].block:
        raise NncError(Diagnostic(f"cannot read {text!r} as the value of one entry", Span(0, 0, 0, 0, name),
                                  help="write several values as a tuple, e.g. (30, 60)"))
    if len(stmts[0].entries[0].items) < 3:  # `--set train.epochs=`, or only a comment
        raise NncError(Diagnostic("no value after '='", Span(0, 0, 0, 0, name),
                                  help="write the value, e.g. --set train.epochs=5, or off to drop the entry"))
    return stmts[0].entries[0].items[2:]
