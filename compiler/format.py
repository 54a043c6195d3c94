"""`nnc fmt`: one canonical layout for a spec, made from its tokens so that nothing but spacing
changes (the grammar's parse tree drops comments and line structure; the lexer keeps both).

The layout is the shipped specs': four spaces per block level; a layer line that names its
layer pads its layer word so the names line up (`conv    conv1 96 ...` / `maxpool pool1 ...`)
within a group of lines (blank lines and blocks end a group); section words padded to one
column (`optimizer  sgd(...)`); one space between values, none inside parentheses, after a
call's word or around `=`, one after a comma; one blank line around the model block; runs of
blank lines kept as one; whole-line comments re-indented to their block, their text kept;
trailing comments kept, aligned across consecutive commented lines; line continuations kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.compiler.layers import LAYERS
from nnc.compiler.model_block import names_layer
from nnc.compiler.spec import SECTIONS
from nnc.grammar.parse import lex

INDENT = " " * 4
# section words line up in one column, as wide as the longest one ("regularize")
SECTION_WIDTH = max(len(s) for s in SECTIONS if s != "model")


@dataclass
class Stmt:
    """A statement as written: its rows (split where a line continuation was) and its comment."""

    rows: list[list]  # lists of lark Tokens, none empty
    comment: str | None = None

    @property
    def tokens(self) -> list:
        return [t for row in self.rows for t in row]

    @property
    def opens(self) -> bool:
        return self.rows[-1][-1].type == "LBRACE"

    @property
    def closes(self) -> bool:
        return self.rows[0][0].type == "RBRACE"


@dataclass(frozen=True)
class Comment:
    text: str


BLANK = "blank"


def _items(text: str) -> list:
    """The text as statements, whole-line comments and blank lines, in order."""
    items: list = []
    rows: list[list] = []
    row: list = []
    comment: str | None = None
    for tok in lex(text):
        if tok.type == "COMMENT":
            comment = tok.rstrip()
        elif tok.type == "_NL":  # the line's end, then the blank and comment lines after it
            rows += [row] if row else []
            items.append(Stmt(rows, comment) if rows else Comment(comment) if comment is not None else BLANK)
            rows, row, comment = [], [], None
            parts = [p.strip() for p in tok.split("\n")]
            items += [Comment(p) if p else BLANK for p in parts[1:-1]]
            items += [Comment(parts[-1])] if parts[-1] else []
        elif tok.startswith("\\"):  # a line continuation
            rows += [row] if row else []
            row = []
        elif not tok.type.startswith("__"):  # (whitespace is __IGNORE_N)
            row.append(tok)
    return items


def _blank_lines(items: list) -> list:
    """Runs of blank lines as one; none at the ends of the file or of a block; one around
    a top-level block (the model) where there was none."""
    out: list = []
    for it in items:
        if it is BLANK and (not out or out[-1] is BLANK or isinstance(out[-1], Stmt) and out[-1].opens):
            continue
        if isinstance(it, Stmt) and it.closes and out and out[-1] is BLANK:
            out.pop()
        out.append(it)
    while out and out[-1] is BLANK:
        out.pop()
    depth, last, inserts = 0, None, []
    for i, it in enumerate(out):
        if not isinstance(it, Stmt):
            continue
        if it.closes:
            depth -= 1
        if depth == 0 and not it.closes:
            if last is not None and (out[last].closes or it.opens) and BLANK not in out[last:i]:
                inserts.append(last + 1)
        if depth == 0:
            last = i
        if it.opens:
            depth += 1
    for i in reversed(inserts):
        out.insert(i, BLANK)
    return out


def join(tokens: list) -> str:
    """Tokens with the canonical spacing between them."""
    out = []
    prev = None
    for t in tokens:
        tight = prev is None or t.type in ("RPAR", "COMMA") or prev.type in ("LPAR", "EQUAL") or t.type == "EQUAL" \
            or t.type == "LPAR" and prev.type == "WORD"
        out.append(str(t) if tight else " " + str(t))
        prev = t
    return "".join(out)


def _column(stmt: Stmt, depth: int) -> str | None:
    """Which column the statement's first word is padded to: 'section', 'name' or None."""
    toks = stmt.rows[0]
    if stmt.opens or len(toks) < 2 or toks[0].type != "WORD" or toks[1].type != "WORD":
        return None
    if depth == 0:
        return "section" if toks[0] in SECTIONS and toks[0] != "model" else None
    named = toks[0] in LAYERS and (len(toks) == 2 or toks[2].type != "LPAR") and names_layer(str(toks[0]), str(toks[1]))
    return "name" if named else None


def _groups(items: list) -> list[list[int]]:
    """Indexes of the statements that line up together: a run at one depth, ended by a blank
    line or a block's first or last line."""
    groups, current, depth = [], [], 0
    for i, it in enumerate(items):
        if isinstance(it, Stmt) and it.closes:
            depth -= 1
        if it is BLANK or isinstance(it, Stmt) and (it.opens or it.closes):
            groups.append(current)
            current = []
        elif isinstance(it, Stmt):
            current.append((i, depth))
        if isinstance(it, Stmt) and it.opens:
            depth += 1
    groups.append(current)
    return [[i for i, _ in g] for g in groups if g]


def layout(text: str) -> str:
    """The canonical layout of a spec's text (which must parse)."""
    items = _blank_lines(_items(text))
    pad: dict[int, int] = {}  # statement index -> width of its first word
    depths = _depths(items)
    for group in _groups(items):
        cols = {i: _column(items[i], depths[i]) for i in group}
        names = [len(items[i].rows[0][0]) for i in group if cols[i] == "name"]
        for i in group:
            if cols[i] == "section":
                pad[i] = SECTION_WIDTH
            elif cols[i] == "name":
                pad[i] = max(names)
    lines: list[tuple[str, str | None, int | None]] = []  # (code, trailing comment, depth where it may align)
    for i, it in enumerate(items):
        indent = INDENT * depths[i]
        if it is BLANK:
            lines.append(("", None, None))
        elif isinstance(it, Comment):
            lines.append((indent + it.text, None, None))
        else:
            rows = [join(r) for r in it.rows]
            if i in pad:
                head = it.rows[0][0]
                rows[0] = str(head).ljust(pad[i]) + " " + join(it.rows[0][1:])
            for k, r in enumerate(rows):
                last = k == len(rows) - 1
                code = (indent + (INDENT if k else "") + r) + ("" if last else " \\")
                aligned = depths[i] if last and len(rows) == 1 and not (it.opens or it.closes) else None
                lines.append((code, it.comment if last else None, aligned))
    return "\n".join(_comments(lines)) + "\n"


def _depths(items: list) -> list[int]:
    out, depth = [], 0
    for it in items:
        if isinstance(it, Stmt) and it.closes:
            depth -= 1
        out.append(depth)
        if isinstance(it, Stmt) and it.opens:
            depth += 1
    return out


def _comments(lines: list[tuple[str, str | None, int | None]]) -> list[str]:
    """Trailing comments two spaces after their code, aligned across consecutive one-row lines
    of one depth that each have one."""
    out, i = [], 0
    while i < len(lines):
        code, comment, depth = lines[i]
        j = i + 1
        if comment is not None and depth is not None:
            while j < len(lines) and lines[j][1] is not None and lines[j][2] == depth:
                j += 1
        width = max(len(c) for c, _, _ in lines[i:j])
        for c, m, _ in lines[i:j]:
            out.append(c if m is None else c.ljust(width) + "  " + m if c.strip() else m)
        i = j
    return out


def significant(text: str) -> list[str]:
    """The text's tokens that carry meaning (no spacing, comments or line breaks)."""
    return [str(t) for t in lex(text) if not t.type.startswith("__") and t.type not in ("COMMENT", "_NL")
            and not t.startswith("\\")]


def format_text(text: str, name: str = "<spec>") -> str:
    """`text` in the canonical layout; an NncError with the diagnostics when the spec has
    errors (a file with errors is left as it is)."""
    from nnc.compiler.checks import check
    from nnc.compiler.load import load_text

    check(load_text(text, name))
    out = layout(text)
    if significant(out) != significant(text):  # only spacing may change: anything else is a bug here
        raise RuntimeError(f"nnc fmt would change the tokens of {name}")
    return out
