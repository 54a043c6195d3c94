"""`nnc fmt`: over every spec in specs/ and docs/, the spec blocks of the docs and the fuzz corpus's
specs that check, formatting is idempotent, changes no token, builds the same model (the same
resolved listing) and loses no comment; and the command's --check, `-` and error paths."""

import importlib.util
import re
import sys

import pytest
from conftest import ROOT, SPECS, run_nnc

from nnc.compiler.checks import check
from nnc.compiler.format import format_text
from nnc.compiler.listing import listing_json
from nnc.compiler.load import load_text
from nnc.diagnostics import NncError
from nnc.grammar.parse import lex

FILES = sorted(SPECS.glob("*.nnspec")) + sorted((ROOT / "docs").glob("*.nnspec"))
BLOCKS = [m.group(1) for md in sorted((ROOT / "docs").glob("*.md"))
          for m in re.finditer(r"^```nnspec\n(.*?)^```", md.read_text(), re.S | re.M)]


def comments(text: str) -> list[str]:
    """Every comment, read by the grammar's own lexer (a trailing one, or those a line break holds)."""
    out = []
    for tok in lex(text):
        if tok.type == "COMMENT":
            out.append(tok.rstrip())
        elif tok.type == "_NL":
            out += [c.rstrip() for c in re.findall(r"#[^\n]*", tok)]
    return out


def model(text: str) -> dict:
    """The resolved listing, less where things are written (formatting may move lines)."""
    out = listing_json(check(load_text(text, "x.nnspec")), resolved=True)
    for layer in out["layers"]:
        layer.pop("line")
    for w in out["warnings"]:
        w.pop("line")
    for r in out["resolved"].values():
        r["origin"] = re.sub(r"line \d+", "line N", r["origin"])
    return out


def same_after_formatting(text: str) -> str:
    once = format_text(text, "x.nnspec")
    assert format_text(once, "x.nnspec") == once  # idempotent
    assert model(once) == model(text)
    assert comments(once) == comments(text)
    return once


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_shipped_specs_are_in_the_canonical_layout(path):
    text = path.read_text()
    assert same_after_formatting(text) == text


def test_doc_blocks():
    formatted = 0
    for text in BLOCKS:
        try:
            check(load_text(text, "x.nnspec"))
        except NncError:
            continue  # (fragments and the docs' examples of errors)
        same_after_formatting(text)
        formatted += 1
    assert formatted >= 5


def test_fuzz_corpus():
    """Mutated specs (bench/fuzz.py's cases) that still check: odd spacing, blank lines, line
    continuations, moved braces and comments, lines spliced from other specs."""
    spec = importlib.util.spec_from_file_location("nnc_bench_fuzz_fmt", ROOT / "bench" / "fuzz.py")
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fuzz
    spec.loader.exec_module(fuzz)
    material = fuzz.Material.load()
    checked = changed = 0
    for i in range(500):
        case = fuzz.make_case(17, i, material, families=("byte", "token", "line"))
        try:
            text = case.data.decode("utf-8")
            check(load_text(text, "x.nnspec"))
        except (NncError, UnicodeDecodeError):
            continue
        checked += 1
        changed += same_after_formatting(text) != text
    assert checked > 50 and changed > 20, (checked, changed)


def respaced(text: str, rng, wild: bool) -> str:
    """The same tokens, with random spacing, indentation, tabs, form feeds and new comments between
    them; `wild`: line continuations and blank lines too (which end groups of aligned lines)."""
    out = []
    for tok in lex(text):
        if tok.type.startswith("__IGNORE") and not tok.startswith("\\"):
            out.append(rng.choice([" ", "  ", "\t", " \f ", "    "] + [" \\\n      "] * wild))
        elif tok.type == "_NL":
            extra = rng.choice(["", "", "  # fmt-note\n", "\t# fmt-another\n"] + ["\n", "\n\n\n"] * wild)
            comment = rng.choice(["", "", "", "   # fmt-trailing"])
            out.append(comment + tok.replace("\n", "\n" + extra, 1) + rng.choice(["", " ", "\t", "        "]))
        else:
            out.append(str(tok))
    return "".join(out)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_respaced_specs_come_back(path):
    """Any spacing of a shipped spec formats to the same canonical text, whatever comments and
    blank lines were added (those are kept)."""
    import random

    text = path.read_text()
    for seed in range(8):
        messy = respaced(text, random.Random(seed), wild=seed >= 4)
        once = same_after_formatting(messy)
        if seed >= 4:  # a statement broken by continuations stays broken where it was
            assert once.count(" \\\n") == messy.count("\\\n")
            continue
        strip = [line for line in once.splitlines() if "# fmt-note" not in line and "# fmt-another" not in line]
        plain = "\n".join(re.sub(r"\s*# fmt-trailing$", "", line) for line in strip if line.strip())
        assert plain == "\n".join(line for line in text.splitlines() if line.strip())


MESSY = """# header

nnspec   1
# about the model
model  Tiny{
input   vector( 64 )


      dense fc1 128    # hidden
   relu # act
  dropout 0.2
       dense   out   10
  # last


}
init weights he , bias constant( 0 )
optimizer adam( lr = 3e-3 )   # fast
train batch 32, \\
   epochs 3
data digits,val 0.1 ,test 0.2
"""

CANONICAL = """# header

nnspec 1

# about the model
model Tiny {
    input vector(64)

    dense fc1 128  # hidden
    relu           # act
    dropout 0.2
    dense out 10
    # last
}

init       weights he, bias constant(0)
optimizer  adam(lr=3e-3)  # fast
train      batch 32, \\
    epochs 3
data       digits, val 0.1, test 0.2
"""


def test_the_canonical_layout():
    assert same_after_formatting(MESSY) == CANONICAL
    # a layer word pads to the longest named layer of its group; unnamed lines are not padded
    text = "model M {\n    input image(1, 8, 8)\n    conv c1 4 kernel 3\n    maxpool p1 kernel 2\n" \
           "    maxpool kernel 2\n    dense fc 10\n}\n"
    assert "    conv    c1 4 kernel 3\n    maxpool p1 kernel 2\n    maxpool kernel 2\n    dense   fc 10\n" \
        in same_after_formatting(text)


def test_fmt_command(tmp_path):
    messy = tmp_path / "tiny.nnspec"
    messy.write_text(MESSY)
    r = run_nnc("fmt", "--check", messy)
    assert r.returncode == 1 and "+nnspec 1" in r.stdout and "-nnspec   1" in r.stdout
    assert messy.read_text() == MESSY  # --check changes nothing
    r = run_nnc("fmt", "-", input=MESSY)
    assert r.returncode == 0 and r.stdout == CANONICAL
    r = run_nnc("fmt", messy)
    assert r.returncode == 0 and messy.read_text() == CANONICAL and "formatted" in r.stderr
    assert run_nnc("fmt", "--check", messy).returncode == 0
    broken = tmp_path / "broken.nnspec"
    broken.write_text(MESSY.replace("dense   out", "dnese   out"))
    r = run_nnc("fmt", broken, messy)
    assert r.returncode == 1 and "unknown layer 'dnese'" in r.stderr and "left as it is" in r.stderr
    assert broken.read_text() == MESSY.replace("dense   out", "dnese   out")
    assert run_nnc("fmt", "--check", SPECS, ROOT / "docs").returncode == 0
