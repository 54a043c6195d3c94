"""The VS Code TextMate grammar (editors/vscode/syntaxes/nnspec.tmLanguage.json) scopes every
shipped spec as the parser reads it.

One node process tokenizes every file with vscode-textmate and vscode-oniguruma, the engine
VS Code itself uses (editors/vscode/test/tokenize.js). The expected scopes are derived
independently, from the project's own Lark grammar (grammar/nnspec.lark): its parse tree says
which word heads a section, which heads a line of the model block (a layer by position, or a
structural word), which words are calls or keyword names, and its lexer says where every
number, size, string and comment is. The comparison is exact both ways: every expected span
has its scope, and no other text has any of these scopes.

Needs node and `npm ci --prefix editors/vscode`; skipped (with the reason) without them.
"""

from __future__ import annotations

import bisect
import json
import re
import shutil
import subprocess
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
from lark import Lark, Token, Tree

from nnc.compiler.layers import LAYERS, STRUCTURE
from nnc.compiler.spec import SECTIONS

ROOT = Path(__file__).resolve().parents[1]
VSCODE = ROOT / "editors" / "vscode"
TOKENIZE = VSCODE / "test" / "tokenize.js"
GRAMMAR = VSCODE / "syntaxes" / "nnspec.tmLanguage.json"

SHIPPED = sorted(ROOT.glob("specs/*.nnspec")) + sorted(ROOT.glob("docs/*.nnspec"))

# The version line's word scopes like a section head.
SECTION_WORDS = frozenset(SECTIONS) | {"nnspec"}
# Words of the model block that are not layers: the compiler's, and the ones the grammar
# reserves for blocks to come. Every other first word of a model line is a layer.
STRUCTURAL = frozenset(STRUCTURE) | {"block", "use", "include", "branch", "concat", "add"}
LAYER_WORDS = [w for w in LAYERS if w not in STRUCTURAL]  # (concat and add are merges, written as structure)

# The scopes checked, each by its exact name, and what the test calls them. A token's category
# is its innermost scope in this table.
CATEGORY = {
    "keyword.control.section.nnspec": "section",
    "entity.name.type.model.nnspec": "model-name",
    "keyword.other.structure.nnspec": "structure",
    "entity.name.function.layer.nnspec": "layer",
    "support.function.nnspec": "call",
    "variable.parameter.nnspec": "parameter",
    "constant.numeric.integer.nnspec": "integer",
    "constant.numeric.float.nnspec": "float",
    "constant.numeric.size.nnspec": "size",
    "constant.language.boolean.nnspec": "boolean",
    "string.quoted.double.nnspec": "string-double",
    "string.quoted.single.nnspec": "string-single",
    "comment.line.number-sign.nnspec": "comment",
}
SCOPE_OF = {v: k for k, v in CATEGORY.items()}


def _skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (the TextMate grammar is tested with node and vscode-textmate)"
    if not (VSCODE / "node_modules").is_dir():
        return "editors/vscode/node_modules is missing: run `npm ci --prefix editors/vscode`"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")

# ---------------------------------------------------------------- synthetic specs

# Every kind of value, and comments in every place a spec may hold one. Parsed by the Lark
# grammar like the shipped specs (it need not pass `nnc check`).
VALUES_SPEC = """\
# A synthetic spec: every kind of value, and comments in every place.
nnspec 1  # the version line, with a trailing comment

model Values {  # a trailing comment after the brace
    input image(3, 32, 32)  # a trailing comment after a call
    # a whole-line comment inside the model block
    conv c1 16 kernel 3x5 stride 1 pad 0 bias false
    lstm enc 8 bidirectional true return sequence
    leaky_relu alpha -0.5
    dropout .25
    dense out 10 \\
        bias true
    repeat 2 {
        gelu
    }
    residual down project {
        conv 16 kernel 3 pad 1
    }
}

data npz("data/#not-a-comment.npz", x='#x', y="y"), val +0.1, test 1e-1  # "not a string"
optimizer adam(lr=3e-4, beta1=0.9), lr_mult(fc8=10)
schedule warmup(epochs=2), multistep(at=(30, 60), factor=1.5E+2)
train batch 32, epochs 10, early_stop(patience=8, metric=val_loss), freeze (c1, enc)
init {
    weights gaussian(std=0.01)   # a trailing comment in a section block
    bias constant(-1) before relu, bias constant(1.) before gelu
}
loss 'a # b' # a single-quoted string, then a comment
"""


def _registry_spec() -> str:
    """Every layer of the compiler's registry, in each place a layer line can be."""
    body = []
    for word in LAYER_WORDS:
        body += [f"    {word}", f"    {word} my_{word} 3 option 1", "    repeat 2 {", f"        {word}", "    }",
                 "    residual {", f"        {word} 4", "    }"]
    return "nnspec 1\n\nmodel Registry {\n    input vector(8)\n" + "\n".join(body) + "\n}\n"


def _sections_spec() -> str:
    """Every section word of the compiler at the head of a line, and the same words where they
    are not section heads: as layers in the model block, as entries in a section's block."""
    heads = [w for w in SECTIONS if w != "model"]
    return ("nnspec 1\nmodel M {\n    input vector(4)\n" + "".join(f"    {w} 2\n" for w in sorted(SECTION_WORDS))
            + "}\n" + "".join(f"{w} x 1\n" for w in heads)
            + "init {\n" + "".join(f"    {w} y\n" for w in sorted(SECTION_WORDS)) + "}\n")


def _doc_blocks() -> dict[str, str]:
    """The ```nnspec blocks of docs/language.md, as files named by their first line."""
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    blocks = {}
    for m in re.finditer(r"^```nnspec\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        line = text.count("\n", 0, m.start()) + 2
        blocks[f"language.md-L{line}.nnspec"] = m.group(1)
    return blocks


# ---------------------------------------------------------------- the tokenizer


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """name -> file: the shipped specs and the synthetic ones."""
    out = {str(p.relative_to(ROOT)): p for p in SHIPPED}
    tmp = tmp_path_factory.mktemp("nnspec")
    synthetic = {"values.nnspec": VALUES_SPEC, "registry.nnspec": _registry_spec(),
                 "sections.nnspec": _sections_spec(), **_doc_blocks()}
    for name, text in synthetic.items():
        (tmp / name).write_text(text, encoding="utf-8")
        out[name] = tmp / name
    return out


@pytest.fixture(scope="module")
def tokens(sources) -> dict[str, list[list[dict]]]:
    """name -> per line, the tokens [{start, text, scopes}] of the VS Code tokenizer (one node run)."""
    names = list(sources)
    proc = subprocess.run(["node", str(TOKENIZE), *(str(sources[n]) for n in names)],
                          check=False, capture_output=True, text=True, timeout=60, cwd=VSCODE)
    assert proc.returncode == 0, f"tokenize.js failed:\n{proc.stderr}"
    result = json.loads(proc.stdout)
    assert [r["file"] for r in result] == [str(sources[n]) for n in names]
    return {n: r["lines"] for n, r in zip(names, result)}


def _text(path: Path) -> str:
    text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    return text if text.endswith("\n") else text + "\n"


# ---------------------------------------------------------------- what the parser says


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark((ROOT / "grammar" / "nnspec.lark").read_text(encoding="utf-8"), parser="lalr")


def _head_word(statement: Tree) -> Token | None:
    """The word a statement starts with (a call's name when it starts with a call), if any."""
    item = statement.children[0].children[0]  # statement -> entry -> first item
    if item.data == "word":
        return item.children[0]
    if item.data == "call":
        return item.children[0]
    return None


def _blocks(statement: Tree) -> list[Tree]:
    return [c for c in statement.children if isinstance(c, Tree) and c.data == "block"]


def expected_spans(text: str) -> set[tuple[int, int, int, str]]:
    """(line, start column, end column, category) of every scoped span, lines and columns
    0-based like the tokenizer's, from the Lark grammar's parse tree and lexer."""
    tree = _lark().parse(text)
    by_position: dict[int, str] = {}  # start offset -> category, for the words scoped by position

    def model_block(block: Tree) -> None:
        for stmt in block.children:
            head = _head_word(stmt)
            if head is not None:
                by_position[head.start_pos] = "structure" if head in STRUCTURAL else "layer"
            for sub in _blocks(stmt):
                model_block(sub)

    for stmt in tree.children:
        head = _head_word(stmt)
        if head is not None and head in SECTION_WORDS:
            by_position[head.start_pos] = "section"
        if head == "model":
            items = stmt.children[0].children
            if len(items) > 1 and items[1].data == "word":
                by_position[items[1].children[0].start_pos] = "model-name"
            for sub in _blocks(stmt):
                model_block(sub)

    spans: list[tuple[int, int, str]] = []  # (start offset, end offset, category)
    for sub in tree.iter_subtrees():
        tok = sub.children[0] if sub.children else None
        category = {"call": "call", "kwarg": "parameter", "size": "size"}.get(sub.data)
        if sub.data == "word" and tok in ("true", "false"):
            category = "boolean"
        elif sub.data == "number":
            category = "integer" if re.fullmatch(r"[+-]?\d+", tok) else "float"
        elif sub.data == "string":
            category = "string-double" if tok.startswith('"') else "string-single"
        if sub.data in ("word", "call") and tok.start_pos in by_position:
            category = by_position[tok.start_pos]  # a section, model name, layer or structural word
        if category:
            spans.append((tok.start_pos, tok.start_pos + len(tok), category))

    for tok in _lark().lex(text, dont_ignore=True):
        if tok.type == "COMMENT":
            spans.append((tok.start_pos, tok.start_pos + len(tok), "comment"))
        elif tok.type == "_NL":  # the newline terminal holds the whole-line comments
            for m in re.finditer(r"#[^\n]*", tok):
                spans.append((tok.start_pos + m.start(), tok.start_pos + m.end(), "comment"))

    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    out = set()
    for start, end, category in spans:
        line = bisect.bisect_right(line_starts, start) - 1
        out.add((line, start - line_starts[line], end - line_starts[line], category))
    return out


def actual_spans(lines: list[list[dict]]) -> set[tuple[int, int, int, str]]:
    """The same, from the tokenizer: adjacent tokens of one category make one span."""
    out = set()
    for n, toks in enumerate(lines):
        run = None  # [start, end, category]
        for t in toks:
            cat = next((CATEGORY[s] for s in reversed(t["scopes"]) if s in CATEGORY), None)
            if any(s.startswith("invalid.") for s in t["scopes"]):
                cat = "invalid"
            if run and cat == run[2] and t["start"] == run[1]:
                run[1] = t["start"] + len(t["text"])
                continue
            if run and run[2]:
                out.add((n, *run))
            run = [t["start"], t["start"] + len(t["text"]), cat]
        if run and run[2]:
            out.add((n, *run))
    return out


def _describe(spans, text: str) -> str:
    lines = text.splitlines()
    return "\n".join(f"  line {n + 1}:{a + 1}-{b} {cat:<14} {lines[n][a:b]!r}" for n, a, b, cat in sorted(spans))


def assert_scopes_match(name: str, text: str, lines: list[list[dict]]) -> set:
    expected, actual = expected_spans(text), actual_spans(lines)
    missing, extra = expected - actual, actual - expected
    assert not missing and not extra, (
        f"{name}: the grammar's scopes differ from the parser's reading\n"
        f"expected, not found:\n{_describe(missing, text) or '  -'}\n"
        f"found, not expected:\n{_describe(extra, text) or '  -'}")
    return expected


def scopes_at(lines: list[list[dict]], line: int, col: int) -> list[str]:
    """The scopes of the character at (line, col), both 1-based."""
    for t in lines[line - 1]:
        if t["start"] <= col - 1 < t["start"] + len(t["text"]):
            return t["scopes"]
    raise AssertionError(f"no token at {line}:{col}")


# ---------------------------------------------------------------- tests


def test_extension_manifest():
    """The grammar tested here is the one the extension contributes, with `#` comments and the
    server command `nnc lsp`."""
    manifest = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    (lang,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert lang["id"] == grammar["language"] == "nnspec" and lang["extensions"] == [".nnspec"]
    assert (VSCODE / grammar["path"]).resolve() == GRAMMAR
    assert json.loads(GRAMMAR.read_text(encoding="utf-8"))["scopeName"] == grammar["scopeName"] == "source.nnspec"
    config = json.loads((VSCODE / lang["configuration"]).read_text(encoding="utf-8"))
    assert config["comments"] == {"lineComment": "#"}
    assert {(p["open"], p["close"]) for p in config["autoClosingPairs"]} == {("(", ")"), ("{", "}"), ('"', '"'), ("'", "'")}
    setting = manifest["contributes"]["configuration"]["properties"]["nnspec.server.command"]
    assert setting["default"] == ["nnc", "lsp"]
    assert {"vscode-textmate", "vscode-oniguruma"} <= set(manifest["devDependencies"])


@pytest.mark.parametrize("name", [str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_spec(name, sources, tokens):
    """Section heads, layer words by position, structural words, calls, keyword names, numbers,
    sizes, strings, booleans and comments of each shipped spec, exactly."""
    text = _text(sources[name])
    expected = assert_scopes_match(name, text, tokens[name])
    # The derivation itself found what a spec holds.
    found = Counter(cat for *_, cat in expected)
    assert found["section"] >= 2 and found["layer"] >= 2 and found["integer"] and found["comment"], found
    layer_words = {text.splitlines()[n][a:b] for n, a, b, cat in expected if cat == "layer"}
    assert layer_words & set(LAYERS), layer_words


def test_doc_examples(sources, tokens):
    """The ```nnspec blocks of docs/language.md (strings, booleans, tuples, ranges ...)."""
    names = [n for n in sources if n.startswith("language.md-")]
    assert len(names) >= 10
    for name in names:
        assert_scopes_match(name, _text(sources[name]), tokens[name])


def test_every_registry_layer_is_a_layer_word(sources, tokens):
    """Each word of nnc.compiler.layers.LAYERS, alone, named with options, in a repeat and in a
    residual block, is scoped as a layer (none is taken for a structural word)."""
    name = "registry.nnspec"
    text = _text(sources[name])
    assert_scopes_match(name, text, tokens[name])
    layer = SCOPE_OF["layer"]
    seen = Counter()
    for n, line in enumerate(text.splitlines(), 1):
        word = line.split()[0] if line.strip() else ""
        if word in LAYER_WORDS:
            col = line.index(word) + 1
            scopes = scopes_at(tokens[name], n, col)
            tok = next(t for t in tokens[name][n - 1] if t["start"] == col - 1)
            assert tok["text"] == word and scopes[-1] == layer, (n, line, tok)
            seen[word] += 1
    assert seen == Counter({w: 4 for w in LAYER_WORDS})


def test_section_words(sources, tokens):
    """Every section of nnc.compiler.spec.SECTIONS (and `nnspec`) heads its line with the section
    scope; the same words are layers at the head of a model line, and plain words inside a
    section's block."""
    name = "sections.nnspec"
    text = _text(sources[name])
    assert_scopes_match(name, text, tokens[name])
    lines = text.splitlines()
    found = actual_spans(tokens[name])
    heads = {(lines[n][a:b], n) for n, a, b, cat in found if cat == "section"}
    assert {w for w, _ in heads} == SECTION_WORDS
    assert all(lines[n].startswith(w) for w, n in heads)
    assert {lines[n][a:b] for n, a, b, cat in found if cat == "layer"} == SECTION_WORDS
    block = lines.index("init {")
    assert not {(n, cat) for n, a, b, cat in found if n > block}, "words inside a section's block are scoped"


def test_values_and_comments(sources, tokens):
    """Hand-checked scopes of the synthetic VALUES_SPEC, then the exact comparison."""
    name = "values.nnspec"
    text = _text(sources[name])
    toks = tokens[name]
    lines = text.splitlines()

    def scope(needle: str, line: str) -> list[str]:
        """The scopes of the first character of `needle` on the line holding `line`."""
        n = next(i for i, ln in enumerate(lines, 1) if line in ln)
        return scopes_at(toks, n, lines[n - 1].index(needle) + 1)

    def only(needle: str, line: str, category: str) -> None:
        """`needle` on the line holding `line` is one token of exactly that category."""
        n = next(i for i, ln in enumerate(lines, 1) if line in ln)
        col = lines[n - 1].index(needle)
        span = {(a, b, cat) for m, a, b, cat in actual_spans(toks) if m == n - 1 and a <= col < b}
        assert span == {(col, col + len(needle), category)}, (needle, lines[n - 1], span)

    only("# A synthetic spec: every kind of value, and comments in every place.", "# A synthetic", "comment")
    only("nnspec", "nnspec 1", "section")
    only("# the version line, with a trailing comment", "nnspec 1", "comment")
    only("model", "model Values", "section")
    only("Values", "model Values", "model-name")
    only("# a trailing comment after the brace", "model Values", "comment")
    only("input", "input image", "structure")
    only("image", "input image", "call")
    only("# a whole-line comment inside the model block", "whole-line comment inside", "comment")
    only("conv", "conv c1", "layer")
    only("3x5", "conv c1", "size")
    only("false", "conv c1", "boolean")
    only("true", "bidirectional true", "boolean")
    only("-0.5", "leaky_relu", "float")
    only(".25", "dropout", "float")
    assert scope("\\", "dense out 10")[-1] == "punctuation.separator.continuation.line.nnspec"
    assert SCOPE_OF["layer"] not in scope("bias", "bias true")  # the continued line has no layer word
    only("true", "bias true", "boolean")
    only("gelu", "        gelu", "layer")
    only("residual", "residual down project", "structure")
    assert not {c for c in CATEGORY if c in scope("down", "residual down") + scope("project", "residual down")}
    only('"data/#not-a-comment.npz"', "data npz", "string-double")
    assert SCOPE_OF["comment"] not in scope("#not-a-comment", "data npz")
    only("'#x'", "data npz", "string-single")
    assert scope("x='", "data npz")[-1] == SCOPE_OF["parameter"]
    assert scope("='", "data npz")[-1] == "keyword.operator.assignment.nnspec"
    only("+0.1", "data npz", "float")
    only("1e-1", "data npz", "float")
    only('# "not a string"', "data npz", "comment")
    only("lr", "optimizer adam", "parameter")
    only("3e-4", "optimizer adam", "float")
    only("lr_mult", "optimizer adam", "call")
    only("1.5E+2", "multistep", "float")
    only("30", "multistep", "integer")
    only("freeze", "freeze (c1", "call")  # the parser reads `freeze (a, b)` as a call too
    assert not {c for c in CATEGORY if c in scope("weights", "weights gaussian")}
    only("# a trailing comment in a section block", "weights gaussian", "comment")
    only("-1", "bias constant(-1)", "integer")
    only("1.", "constant(1.)", "float")
    only("'a # b'", "loss 'a", "string-single")
    only("# a single-quoted string, then a comment", "loss 'a", "comment")
    assert_scopes_match(name, text, toks)
