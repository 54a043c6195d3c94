"""`include "FILE" [NAME...]`: sections and blocks taken from another spec file.

What overrides what, in one rule: what a file writes itself wins over what it includes, and a
later include wins over an earlier one; a section is taken or replaced whole (the model block is
a section here). `NAME...` takes only those sections and blocks. An included file may include
others; its relative paths are read beside it. A cycle or a file that cannot be read is an
error at the include line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from nnc.compiler.blocks import BlockDef, definition
from nnc.compiler.layers import LAYERS, STRUCTURE
from nnc.compiler.spec import SECTIONS
from nnc.diagnostics import Collector, Diagnostic, Document, NncError, Span, closest, did_you_mean
from nnc.grammar.parse import Statement, decode, parse

MAX_INCLUDE_BYTES = 10_000_000


@dataclass
class Gathered:
    """A file's top-level statements with its includes resolved."""

    sections: dict[str, Statement] = field(default_factory=dict)  # section word -> its statement
    blocks: dict[str, BlockDef] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # every included file: resolved path -> text
    includes: list[tuple[str, Span]] = field(default_factory=list)  # (resolved path, the include line)


def resolve(name: str, including: str) -> str:
    """`name` as the including file reads it: beside that file (the current folder for stdin)."""
    if os.path.isabs(name):
        return os.path.normpath(name)
    base = os.path.dirname(os.path.abspath(including)) if not including.startswith("<") else os.getcwd()
    return os.path.normpath(os.path.join(base, name))


def _read(path: str, stored: dict[str, str]) -> str:
    if path in stored:  # a checkpoint carries the files its spec included
        return stored[path]
    if not os.path.exists(path):
        raise OSError("no such file")
    if os.path.isdir(path):
        raise OSError("is a folder, not a spec file")
    with open(path, "rb") as f:
        data = f.read(MAX_INCLUDE_BYTES + 1)
    if len(data) > MAX_INCLUDE_BYTES:
        raise OSError("over 10 MB, too large for a spec")
    return decode(data, path)


class Includer:
    def __init__(self, out: Collector, stored: dict[str, str] | None = None):
        self.out = out
        self.stored = stored or {}
        self.taken = (*LAYERS, *STRUCTURE, *SECTIONS)

    def gather(self, stmts: list[Statement], doc: Document, chain: tuple[str, ...] = ()) -> Gathered:
        """Sections and blocks of `stmts` (the file `doc`), includes merged under them."""
        own = Gathered()
        base = Gathered()
        for s in stmts:
            word = s.head.value if s.head.kind == "word" else None
            if word == "include":
                self.include(s, doc, chain, base)
            elif word == "block":
                b = definition(s, self.out, self.taken)
                if b is not None and b.name in own.blocks:
                    first = own.blocks[b.name].span
                    self.out.add(Diagnostic(f"block {b.name} is defined twice (first on line {first.line})", s.span,
                                            related=((first, f"block {b.name} is first defined here"),)))
                elif b is not None:
                    own.blocks[b.name] = b
            elif word in SECTIONS:
                if word in own.sections:
                    first = own.sections[word].span
                    self.out.add(Diagnostic(f"{word} is given twice (first on line {first.line})", s.head.span,
                                            related=((first, f"{word} is first given here"),)))
                else:
                    own.sections[word] = s
            elif word != "nnspec":  # (the version line: load._version)
                self.unknown(s)
        base.sections.update(own.sections)
        base.blocks.update(own.blocks)
        return base

    def unknown(self, s: Statement) -> None:
        text = s.head.value if s.head.kind == "word" else s.head.text
        fix = closest(text, (*SECTIONS, "block", "include")) if text not in LAYERS else None
        hint = "layers go inside the model { ... } block" if text in LAYERS else f"did you mean '{fix}'?" if fix else None
        self.out.add(Diagnostic(f"unknown section '{text}'", s.head.span, fix=fix,
                                help=hint or "sections: " + ", ".join(SECTIONS) + "; and block, include"))

    def include(self, s: Statement, doc: Document, chain: tuple[str, ...], into: Gathered) -> None:
        items = s.entries[0].items
        if len(s.entries) > 1 or len(items) < 2 or items[1].kind != "string" or s.block is not None or \
                any(v.kind != "word" for v in items[2:]):
            self.out.add(Diagnostic('include reads `include "FILE"` or `include "FILE" NAME...` (sections and blocks '
                                    "to take)", s.span))
            return
        path = resolve(items[1].value, doc.name)
        here = os.path.abspath(doc.name) if not doc.name.startswith("<") else doc.name
        if path in (*chain, here):
            names = " -> ".join(os.path.basename(p) for p in (*chain, here, path))
            self.out.add(Diagnostic(f"include cycle: {names}", items[1].span,
                                    help="a file cannot include itself, directly or through another file"))
            return
        try:
            text = _read(path, self.stored)
            stmts = list(parse(text, path, included=True))
        except OSError as e:
            self.out.add(Diagnostic(f"cannot include {items[1].value!r}: {e.strerror or e}", items[1].span,
                                    help=f"read as {path}"))
            return
        except NncError as e:  # a syntax error in the included file: reported where it is
            self.out.extend(e)
            return
        stmts = [t for t in stmts if not (t.head.kind == "word" and t.head.value == "nnspec")]
        got = self.gather(stmts, Document(path, text), (*chain, here))
        into.files[path] = text
        into.files.update(got.files)
        into.includes.append((path, s.span))
        wanted = {v.value: v for v in items[2:]}
        for name, v in wanted.items():
            if name not in got.sections and name not in got.blocks:
                have = [*got.sections, *got.blocks]
                self.out.add(Diagnostic(f"{items[1].value} has no section or block '{name}'", v.span,
                                        help=did_you_mean(name, have) or ("it has: " + ", ".join(have) if have else
                                                                          "it has no sections or blocks")))
        keep = (lambda n: n in wanted) if wanted else (lambda n: True)
        into.sections.update({k: v for k, v in got.sections.items() if keep(k)})
        into.blocks.update({k: v for k, v in got.blocks.items() if keep(k)})
