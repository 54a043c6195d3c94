"""Where a position in a spec's text is, for an editor: the blocks around it, its statement's
tokens, the token under it, the call whose parentheses hold it. Read from the text alone with
a forgiving tokenizer, since the text being typed is seldom a spec that parses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TOKEN = re.compile(r"""(?P<STRING>"[^"\n]*"?|'[^'\n]*'?)|(?P<SIZE>\d+(?:x\d+)+(?![\w.]))"""
                   r"""|(?P<NUMBER>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)|(?P<WORD>[A-Za-z_][A-Za-z0-9_.]*)"""
                   r"""|(?P<COMMENT>\#.*)|(?P<PUNCT>[(){},=])|(?P<SPACE>\s+)|(?P<OTHER>.)""")


@dataclass(frozen=True)
class Tok:
    text: str
    kind: str  # WORD, NUMBER, SIZE, STRING, PUNCT, OTHER
    line: int  # 0-based, as editors count
    start: int  # column of the first character, 0-based
    end: int  # column after the last


def tokens(line_text: str, line: int) -> list[Tok]:
    """A line's tokens, without spaces, comments and line continuations."""
    out = []
    for m in TOKEN.finditer(line_text):
        kind = m.lastgroup
        if kind in ("SPACE", "COMMENT") or m.group() == "\\":
            continue
        out.append(Tok(m.group(), kind, line, m.start(), m.end()))
    return out


def _continued(text: str) -> bool:
    code = [t for t in TOKEN.finditer(text) if t.lastgroup != "SPACE"]
    return bool(code) and code[-1].group() == "\\"


def _statement_lines(rows: list[str], line: int) -> range:
    """The lines of the statement on `line`, with the lines a backslash joins to it."""
    start = line
    while start > 0 and _continued(rows[start - 1]):
        start -= 1
    end = line
    while end < len(rows) - 1 and _continued(rows[end]):
        end += 1
    return range(start, end + 1)


def open_blocks(rows: list[str], before: int) -> list[tuple[str, int]]:
    """(the head word, its line) of each block still open at line `before`, outermost first."""
    stack: list[tuple[str, int]] = []
    head_line = 0
    for n in range(min(before, len(rows))):
        toks = tokens(rows[n], n)
        if n == 0 or not _continued(rows[n - 1]):
            head_line = n
        for t in toks:
            if t.text == "{":
                first = tokens(rows[head_line], head_line)
                stack.append((first[0].text if first else "", head_line))
            elif t.text == "}" and stack:
                stack.pop()
    return stack


def block_end(rows: list[str], line: int) -> int:
    """The line of the '}' that closes the block opened on `line` (the last line if none does)."""
    depth = 0
    for n in range(line, len(rows)):
        for t in tokens(rows[n], n):
            depth += (t.text == "{") - (t.text == "}")
            if depth == 0 and t.text == "}":
                return n
    return len(rows) - 1


@dataclass
class Cursor:
    blocks: list[str]  # the head words of the blocks around the position, outermost first
    stmt: list[Tok]  # the statement's tokens
    index: int  # where the position is among them: the token under it, or the one it would start
    at: Tok | None  # the word, number or string under the position
    prefix: str  # the part of a word before the position (what completion completes)
    entry: list[Tok] = field(default_factory=list)  # the entry's tokens before the position (after the head word)
    call: str | None = None  # the call whose parentheses hold the position
    key: str | None = None  # the keyword of the argument being written in that call (`key=` seen)
    after_comma: bool = False  # the position starts an argument of that call

    @property
    def section(self) -> str | None:
        """The top-level statement's word: a section, `model` or `nnspec`."""
        if self.blocks:
            return self.blocks[0]
        return self.stmt[0].text if self.stmt and self.index > 0 else None

    @property
    def head(self) -> str | None:
        return self.stmt[0].text if self.stmt and self.index > 0 else None


def at(text: str, line: int, column: int) -> Cursor:
    """The cursor at 0-based (line, column) of `text`."""
    rows = text.split("\n")
    if not rows or line >= len(rows):
        return Cursor([], [], 0, None, "")
    lines = _statement_lines(rows, line)
    stmt = [t for n in lines for t in tokens(rows[n], n)]
    blocks = [head for head, _ in open_blocks(rows, lines.start)]
    if stmt and stmt[0].text == "}":  # the block's closing line is outside it
        blocks = blocks[:-1]
    here = (line, column)
    under = next((t for t in stmt if (t.line, t.start) <= here < (t.line, t.end) and t.kind != "PUNCT"), None) or \
        next((t for t in stmt if (t.line, t.start) < here <= (t.line, t.end) and t.kind == "WORD"), None)
    before = [t for t in stmt if (t.line, t.end) <= here or t is under]
    index = stmt.index(under) if under else len(before)
    prefix = rows[line][under.start:column] if under and under.kind == "WORD" and under.line == line else ""
    cur = Cursor(blocks, stmt, index, under, prefix)
    _arguments(cur, [t for t in before if t is not under])
    return cur


def _arguments(cur: Cursor, before: list[Tok]) -> None:
    """The entry, call and keyword the position is in, from the tokens before it."""
    calls: list[str | None] = []
    entry_start = 1 if not cur.blocks else 0
    arg_start = None
    for i, t in enumerate(before):
        if t.text == "(":
            calls.append(before[i - 1].text if i and before[i - 1].kind == "WORD" else None)
            arg_start = i + 1
        elif t.text == ")" and calls:
            calls.pop()
            arg_start = None
        elif t.text == "," and not calls:
            entry_start = i + 1
        elif t.text == "," and calls:
            arg_start = i + 1
    if calls and calls[-1] is not None:
        cur.call = calls[-1]
        arg = before[arg_start:] if arg_start is not None else []
        cur.after_comma = not arg
        if len(arg) >= 2 and arg[1].text == "=":
            cur.key = arg[0].text
    cur.entry = before[entry_start:]
