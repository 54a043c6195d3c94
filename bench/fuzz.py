"""Mutation fuzzing of nnc's front end: each case goes the way of `nnc check FILE`.

    python bench/fuzz.py N SEED [--cli K] [--save DIR] [--json] [--start I] [--only FAMILY] [--budget 2] [--mem-mb 1024]

The seeds are every spec in specs/ and docs/ and the ```nnspec blocks of docs/*.md that parse.
Each case mutates one seed with one family of mutations, one to three times:

- byte:  flip a bit, set or insert bytes (NUL, control characters, broken UTF-8, U+2028, a BOM,
         a line continuation, 400 or 5,000 digits), delete, duplicate or truncate;
- token: delete, duplicate, swap, replace or insert tokens: other tokens of the corpus, words
         of nnc's registries, numbers like 0, -1, 1e309, 10**400, 2**70, calls, tuples and
         blocks nested up to 1,000 deep; or turn a number of the spec into such a number;
- line:  delete, duplicate, swap or move lines, add or remove braces, join lines, splice in
         a line of another seed;
- set:   a seed with one to three `--set KEY=VALUE` overrides made of the same material.

A mutation that would grow a case past 64 KB is not applied (what a large file costs is a
matter of the parser's throughput, measured on its own in docs/benchmarks.md).

and then runs in this process as `nnc check` does: decode the bytes, `load_text`, `check`.
Outcomes:

    ok        the spec checks
    error     an NncError (a user error), whose every diagnostic with a position points at a
              line:col inside the file and renders without raising

and the failures:

    crash     any other exception (type, message, the frame in nnc, a minimized reproducer)
    hang      over --budget seconds (the case is interrupted there)
    memory    a MemoryError under the --mem-mb address-space limit, or peak RSS up by more
              than --growth-mb in one case
    position  a diagnostic at a line:col outside the file, or a position without a file
    render    rendering the diagnostics raised
    internals a message shows Python internals (a dict, a repr, a class)

`--cli K` also runs K of the cases (the failing ones first) through the real command,
`python -m nnc.cli check FILE [--set ...]`, in a subprocess: the exit code must be 0 or 1
and stderr must not hold a traceback. `--save DIR` writes each failing input there (a few
per distinct failure), with its minimized reproducer and a note. `--start I` numbers the
cases from I: case I of a seed is the same input in every run (with the same --only), so
`python bench/fuzz.py 1 SEED --start I` replays it. `--only set` (say) draws every case
from one family. Exits 1 when a case failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "fuzz.nnspec"  # the file name the in-process cases are read under
FAILURES = ("crash", "hang", "memory", "position", "render", "internals", "cli")
FAMILIES = ("byte", "token", "line", "set")
# The seeds are 0.1-2.4 KB. Past this size a case measures the parser's throughput (~100 KB/s,
# linear), not a blow-up: a mutation that would grow a case further is not applied.
MAX_CASE = 64 * 1024

# ---------------------------------------------------------------- material


def corpus() -> list[tuple[str, bytes]]:
    """(name, bytes) of every seed: the spec files, then the doc blocks that parse."""
    from nnc.diagnostics import NncError
    from nnc.grammar.parse import parse

    seeds = [(str(p.relative_to(ROOT)), p.read_bytes())
             for p in sorted(ROOT.glob("specs/*.nnspec")) + sorted(ROOT.glob("docs/*.nnspec"))]
    for md in sorted(ROOT.glob("docs/*.md")):
        for i, m in enumerate(re.finditer(r"^```nnspec\n(.*?)^```", md.read_text(), re.S | re.M), 1):
            try:
                parse(m.group(1))
            except NncError:
                continue
            seeds.append((f"{md.relative_to(ROOT)}#{i}", m.group(1).encode()))
    return seeds


def vocabulary() -> list[str]:
    """Every word nnc gives a meaning: layers, sections, registry entries and their options."""
    from nnc.compiler import spec as s
    from nnc.compiler.layers import LAYERS, STRUCTURE
    from nnc.compiler.values import RANGES
    from nnc.compiler.vocab.augment import AUGMENT
    from nnc.compiler.vocab.initializers import INITIALIZERS
    from nnc.compiler.vocab.losses import LOSSES
    from nnc.compiler.vocab.optimizers import OPTIMIZERS
    from nnc.compiler.vocab.preprocess import PREPROCESS
    from nnc.compiler.vocab.schedules import SCHEDULES, Warmup
    from nnc.compiler.vocab.sources import SOURCES

    words = set(STRUCTURE) | set(s.SECTIONS) | set(s.INPUTS) | set(RANGES)
    words |= {"nnspec", "true", "false", "before", "weights", "bias", "project", "off", "none", "warmup",
              "lr_mult", "decay_mult", "val_loss", "val_accuracy", "last", "sequence", "fc1", "conv1", "res1"}
    models = [s.Train, s.Regularize, s.DataOptions, s.EarlyStop, s.Finetune, Warmup]
    for registry in (LAYERS, OPTIMIZERS, LOSSES, SCHEDULES, SOURCES, PREPROCESS, AUGMENT, INITIALIZERS):
        words |= set(registry)
        models += [d.params for d in registry.values() if getattr(d, "params", None)]
    for m in models:
        words |= {f.alias or n for n, f in m.model_fields.items()}
    return sorted(words)


def set_keys() -> dict[str, list[str]]:
    """The keys each section takes in `--set SECTION.KEY=VALUE`."""
    from nnc.compiler import spec as s
    from nnc.compiler.vocab.losses import LOSSES
    from nnc.compiler.vocab.optimizers import OPTIMIZERS
    from nnc.compiler.vocab.schedules import SCHEDULES

    def names(*models) -> list[str]:
        return sorted({f.alias or n for m in models for n, f in m.model_fields.items()})

    return {"train": names(s.Train), "data": names(s.DataOptions) + ["preprocess", "augment"],
            "regularize": names(s.Regularize), "init": ["weights", "bias"],
            "optimizer": names(*(d.params for d in OPTIMIZERS.values())) + ["lr_mult", "decay_mult"],
            "schedule": names(*(d.params for d in SCHEDULES.values())) + ["warmup"],
            "loss": names(*(d.params for d in LOSSES.values()))}


NUMBERS = ["0", "-1", "1", "-0", "0.0", "2", "3", ".5", "1.", "1e309", "-1e309", "1e-400", "1e999999999",
           "1" + "0" * 400, "-1" + "0" * 400, str(2**70), str(2**63), str(2**63 - 1), str(2**64), "9" * 5000,
           "2147483648", "65536", "1e18", "1e300", "3x" + "0" * 400, "0x0", "1x1x1", "65536x65536", "3x3", "0.999999"]
PUNCT = ["(", ")", "{", "}", ",", "=", "\\", "#", "\"", "'", "\n", "{\n", "\n}\n", "x", "-", ".", "@", "\t"]
SPECIAL_BYTES = [b"\x00", b"\xff", b"\xc3", b"\xe2\x80\xa8", b"\xc2\x85", b"\x0c", b"\r", b"\x1b[31m", b"\t",
                 b"\\\n", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\x7f", b"\x0b", b"\xf0\x9f\x98\x80", b"\x08",
                 b"1" + b"0" * 400, b"9" * 5000, b"\r\n", b"\x1c", b"\xe2\x80\xae"]
TOKEN = re.compile(r"""#[^\n]*|"[^"\n]*"|'[^'\n]*'|\d+(?:x\d+)+|[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"""
                   r"""|[A-Za-z_][A-Za-z0-9_.]*|\s+|.""", re.S)


def nested(rng: random.Random, words: list[str]) -> str:
    """A value or block nested up to 1,000 deep (or not closed)."""
    k = rng.choice([2, 10, 63, 64, 65, 100, 300, 490, 500, 1000])
    w = rng.choice(words)
    form = rng.randrange(7)
    if form == 0:
        return f"{w}(" * k + "1" + ")" * k
    if form == 1:
        return "(" * k + "1" + ", 1)" * k
    if form == 2:
        return f"{w}(x=" * k + "1" + ")" * k
    if form == 3:
        return "(" * k
    if form == 4:
        return "{\n" * k + "relu\n" + "}\n" * k
    if form == 5:
        return "".join(f"repeat {rng.choice(NUMBERS[:8] + ['1000000000', '100000000'])} {{\n" for _ in range(k)) \
            + "relu6\n" + "}\n" * k
    return "residual {\n" * k + rng.choice(["relu", "relu6", "dense 2"]) + "\n" + "}\n" * k


@dataclass
class Material:
    seeds: list[tuple[str, bytes]]
    words: list[str]
    tokens: list[str]  # every non-blank token of the corpus
    lines: list[bytes]  # every line of the corpus
    keys: dict[str, list[str]]  # section -> its --set keys

    @classmethod
    def load(cls) -> "Material":
        seeds = corpus()
        tokens, lines = set(), set()
        for _, data in seeds:
            text = data.decode()
            tokens |= {t for t in TOKEN.findall(text) if t.strip()}
            lines |= set(data.splitlines(keepends=True))
        return cls(seeds, vocabulary(), sorted(tokens), sorted(lines), set_keys())

    def token(self, rng: random.Random) -> str:
        r = rng.random()
        if r < 0.3:
            return rng.choice(self.tokens)
        if r < 0.55:
            return rng.choice(self.words)
        if r < 0.8:
            return rng.choice(NUMBERS)
        if r < 0.93:
            return rng.choice(PUNCT)
        return nested(rng, self.words)


# ---------------------------------------------------------------- mutations


def mutate_bytes(rng: random.Random, data: bytes, m: Material) -> tuple[bytes, str]:
    b = bytearray(data)
    op = rng.choice(["flip", "set", "insert", "insert", "delete", "duplicate", "truncate"])
    i = rng.randrange(len(b) + 1)
    if op == "flip" and b:
        i = min(i, len(b) - 1)
        b[i] ^= 1 << rng.randrange(8)
    elif op == "set" and b:
        i = min(i, len(b) - 1)
        b[i] = rng.choice([rng.randrange(256), 0, 0x7F, 0x80, 0xFF, 0x0A, 0x0D, 0x7B, 0x7D, 0x28, 0x29])
    elif op == "insert":
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        b[i:i] = rng.choice(SPECIAL_BYTES) if rng.random() < 0.7 else noise
    elif op == "delete":
        del b[i:i + rng.randint(1, 8)]
    elif op == "duplicate" and b:
        j = rng.randrange(len(b))
        b[i:i] = b[j:j + rng.randint(1, 64)]
    elif op == "truncate":
        del b[i:]
    return bytes(b), f"{op}@{i}"


def mutate_tokens(rng: random.Random, data: bytes, m: Material) -> tuple[bytes, str]:
    toks = TOKEN.findall(data.decode("utf-8", "surrogateescape"))
    solid = [i for i, t in enumerate(toks) if t.strip()] or [0]
    if not toks:
        toks = [""]
    op = rng.choice(["delete", "duplicate", "swap", "replace", "replace", "insert", "insert", "renumber"])
    i = rng.choice(solid)
    numbers = [j for j in solid if toks[j][:1].isdigit() or toks[j][:1] in "+-."]
    if op == "renumber" and numbers:  # a number written in the spec becomes an extreme one
        i = rng.choice(numbers)
        toks[i] = rng.choice(NUMBERS)
    elif op == "delete":
        toks[i] = ""
    elif op == "duplicate":
        toks[i] = toks[i] + " " + toks[i]
    elif op == "swap":
        j = rng.choice(solid)
        toks[i], toks[j] = toks[j], toks[i]
    elif op == "replace":
        toks[i] = m.token(rng)
    else:
        toks[i] = toks[i] + rng.choice([" ", "", "\n"]) + m.token(rng)
    return "".join(toks).encode("utf-8", "surrogateescape"), f"{op}@tok{i}"


def mutate_lines(rng: random.Random, data: bytes, m: Material) -> tuple[bytes, str]:
    rows = data.splitlines(keepends=True) or [b""]
    op = rng.choice(["delete", "duplicate", "swap", "move", "brace", "unbrace", "join", "splice"])
    i, j = rng.randrange(len(rows)), rng.randrange(len(rows))
    if op == "delete":
        del rows[i]
    elif op == "duplicate":
        rows[i:i] = [rows[i]] * rng.choice([1, 1, 2, 100])
    elif op == "swap":
        rows[i], rows[j] = rows[j], rows[i]
    elif op == "move":
        rows.insert(j, rows.pop(i))
    elif op == "brace":
        rows.insert(i, rng.choice([b"{\n", b"}\n", b"repeat 1000000000 {\n", b"residual {\n", b"model M {\n",
                                    b"    input vector(4)\n", b"nnspec 1\n", b"nnspec M {\n"]))
    elif op == "unbrace":
        rows[i] = rows[i].replace(b"{", b"").replace(b"}", b"")
    elif op == "join":
        rows[i] = rows[i].rstrip(b"\r\n") + b" "
    else:
        rows.insert(i, rng.choice(m.lines))
    return b"".join(rows), f"{op}@line{i + 1}"


def make_override(rng: random.Random, m: Material) -> str:
    from nnc.compiler.spec import SECTIONS

    section = rng.choice(list(m.keys)) if rng.random() < 0.85 else rng.choice(list(SECTIONS) + ["bogus", ""])
    keys = m.keys.get(section, [])
    key = rng.choice(keys) if keys and rng.random() < 0.7 else rng.choice(m.words + [""])
    value = m.token(rng) if rng.random() < 0.8 else " ".join(m.token(rng) for _ in range(3))
    if rng.random() < 0.15:  # a value in a call's parentheses, as lr_mult and early_stop take them
        value = "(" + value + ")"
    if rng.random() < 0.2:
        return f"{section}={value}"
    return f"{section}.{key}={value}"


MUTATORS = {"byte": mutate_bytes, "token": mutate_tokens, "line": mutate_lines}


@dataclass
class Case:
    index: int
    seed_name: str
    family: str
    ops: list[str]
    data: bytes
    overrides: tuple[str, ...] = ()


WEIGHTS = {"byte": 30, "token": 40, "line": 22, "set": 8}


def make_case(seed: int, index: int, m: Material, families: tuple[str, ...] = FAMILIES) -> Case:
    rng = random.Random(seed * 1_000_003 + index)  # case `index` of `seed` is the same in every run
    name, data = rng.choice(m.seeds)
    family = rng.choices(families, weights=[WEIGHTS[f] for f in families])[0]
    ops: list[str] = []
    overrides: tuple[str, ...] = ()
    if family == "set":
        overrides = tuple(make_override(rng, m) for _ in range(rng.choice([1, 1, 2, 3])))
        ops = [f"--set {o[:60]}" for o in overrides]
    else:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            new, op = MUTATORS[family](rng, data, m)
            if len(new) <= MAX_CASE:  # (two 100-fold duplications of a line would make a megabyte)
                data = new
                ops.append(op)
    return Case(index, name, family, ops, data, overrides)


# ---------------------------------------------------------------- one case


class Hang(BaseException):
    """Raised by the alarm in a case that ran past its budget (a BaseException: nnc's own
    `except Exception` must not swallow it)."""


def _alarm(signum, frame):
    raise Hang()


INTERNALS = re.compile(r"\{'[A-Za-z_]+': |<reported>|<no value>| object at 0x|<class '|NoneType|Traceback")


@dataclass
class Outcome:
    kind: str  # ok, error, or one of FAILURES
    detail: str = ""
    signature: str = ""  # what makes two failures the same bug
    seconds: float = 0.0
    trace: str = ""


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _nnc_frame(tb) -> str:
    """The innermost frame in nnc's own code: file:line function."""
    def ours(f) -> bool:
        parts = Path(f.filename).parts
        return (Path(f.filename).is_relative_to(ROOT) or "nnc" in parts) and ".venv" not in parts \
            and "site-packages" not in parts and Path(f.filename) != Path(__file__).resolve()

    frames = traceback.extract_tb(tb)
    f = ([f for f in frames if ours(f)] or frames or [None])[-1]
    if f is None:
        return "?"
    p = Path(f.filename)
    return f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p.name}:{f.lineno} {f.name}"


def verify(err, text_lines: list[str] | None) -> Outcome | None:
    """The failure an NncError's diagnostics show, if any."""
    from nnc.diagnostics import lines, render_all

    for d in err.diagnostics:
        for t in (d.message, d.help or ""):
            if m := INTERNALS.search(t):
                return Outcome("internals", t[:300], f"internals:{m.group(0)}:{re.sub(r'[0-9]+', 'N', d.message[:40])}")
        s = d.span
        if s is None or s.origin:
            continue
        if s.line < 0 or s.column < 0:
            return Outcome("position", f"negative position {s.line}:{s.column}: {d.message[:200]}", "position:negative")
        if s.line == 0:
            continue
        if d.document is None:
            return Outcome("position", f"a position {s.line}:{s.column} without a file: {d.message[:200]}",
                           "position:nosource")
        rows = lines(d.document.text) if d.document.name != NAME or text_lines is None else text_lines
        if not 1 <= s.line <= len(rows):
            return Outcome("position", f"line {s.line} of a {len(rows)}-line file: {d.message[:200]}", "position:line")
        if not 1 <= s.column <= len(rows[s.line - 1]) + 1:
            return Outcome("position", f"column {s.column} of line {s.line} ({len(rows[s.line - 1])} characters): "
                                       f"{d.message[:200]}", "position:column")
    try:
        render_all(err.diagnostics)
        render_all(err.diagnostics, color=True)
    except Exception as e:  # noqa: BLE001
        return Outcome("render", f"{type(e).__name__}: {e}"[:300],
                       f"render:{type(e).__name__}:{_nnc_frame(e.__traceback__)}", trace=traceback.format_exc())
    return None


def run_case(data: bytes, overrides: tuple[str, ...] = (), budget: float = 2.0, growth_mb: float = 100.0) -> Outcome:
    """One case, the way `nnc check` reads a file (decode, load_text, check)."""
    from nnc.compiler.checks import check
    from nnc.compiler.load import load_text
    from nnc.diagnostics import NncError, lines
    from nnc.grammar.parse import decode

    rss0 = _maxrss_mb()
    old = signal.signal(signal.SIGALRM, _alarm)
    text_lines = None
    t0 = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            text = decode(data, NAME)
            text_lines = lines(text)
            check(load_text(text, NAME, overrides))
            out = Outcome("ok")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except NncError as e:
        out = verify(e, text_lines) or Outcome("error", e.diagnostics[0].message[:200] if e.diagnostics else "")
    except Hang:
        out = Outcome("hang", f"interrupted after {budget:g} s", "hang")
    except MemoryError as e:
        out = Outcome("memory", "MemoryError", f"memory:{_nnc_frame(e.__traceback__)}", trace=traceback.format_exc())
    except Exception as e:  # noqa: BLE001 (every other exception is the bug this looks for)
        out = Outcome("crash", f"{type(e).__name__}: {e}"[:300], f"crash:{type(e).__name__}:{_nnc_frame(e.__traceback__)}",
                      trace=traceback.format_exc())
    finally:
        signal.signal(signal.SIGALRM, old)
    out.seconds = time.perf_counter() - t0
    if out.kind in ("ok", "error") and out.seconds > budget:  # (the alarm fires late inside C code)
        out = Outcome("hang", f"took {out.seconds:.1f} s", "hang", out.seconds)
    grown = _maxrss_mb() - rss0
    if out.kind in ("ok", "error") and grown > growth_mb:
        out = Outcome("memory", f"peak RSS grew by {grown:.0f} MB", "memory:growth", out.seconds)
    return out


def minimize(data: bytes, overrides: tuple[str, ...], signature: str, budget: float, tries: int = 400) -> bytes:
    """A smaller input with the same failure: lines removed, then ever smaller chunks of bytes."""
    def same(d: bytes) -> bool:
        nonlocal tries
        tries -= 1
        return run_case(d, overrides, budget).signature == signature

    rows = data.splitlines(keepends=True)
    i = 0
    while i < len(rows) and tries > 0:
        cand = rows[:i] + rows[i + 1:]
        if same(b"".join(cand)):
            rows = cand
        else:
            i += 1
    data = b"".join(rows)
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and tries > 0:
        i = 0
        while i < len(data) and tries > 0:
            cand = data[:i] + data[i + chunk:]
            if same(cand):
                data = cand
            else:
                i += chunk
        chunk //= 2
    return data


# ---------------------------------------------------------------- the real command


def run_cli(case: Case, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.nnspec"
        path.write_bytes(case.data)
        cmd = [sys.executable, "-m", "nnc.cli", "check", str(path)] + [f"--set={o}" for o in case.overrides]
        env = dict(os.environ, NO_COLOR="1")
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, cwd=tmp, env=env)
        except subprocess.TimeoutExpired:
            return Outcome("cli", f"nnc check ran over {timeout:g} s", "cli:timeout", time.perf_counter() - t0)
        dt = time.perf_counter() - t0
    if p.returncode not in (0, 1) and not (case.overrides and p.returncode == 2):
        return Outcome("cli", f"exit {p.returncode}: {p.stderr[-300:]}", f"cli:exit{p.returncode}", dt)
    if "Traceback" in p.stderr:
        return Outcome("cli", p.stderr[-300:], "cli:traceback", dt)
    return Outcome("ok" if p.returncode == 0 else "error", seconds=dt)


# ---------------------------------------------------------------- the run


@dataclass
class Report:
    cases: int = 0
    seconds: float = 0.0
    counts: dict = field(default_factory=lambda: defaultdict(Counter))  # family -> outcome -> n
    failures: dict = field(default_factory=dict)  # signature -> {kind, count, first case, ...}
    slowest: tuple = (0.0, -1)
    cli: Counter = field(default_factory=Counter)


def fuzz(n: int, seed: int, start: int = 0, budget: float = 2.0, growth_mb: float = 100.0, save: Path | None = None,
         cli: int = 0, minimize_tries: int = 400, progress: bool = False, families: tuple[str, ...] = FAMILIES) -> Report:
    m = Material.load()
    for name, data in m.seeds:  # warm-up (lazy imports, pydantic schemas), and the seeds themselves
        out = run_case(data, budget=30.0)
        if out.kind not in ("ok", "error"):
            raise SystemExit(f"seed {name} fails before any mutation: {out.kind} {out.detail}")
    rep = Report()
    t0 = time.perf_counter()
    failing: list[Case] = []
    for i in range(start, start + n):
        case = make_case(seed, i, m, families)
        out = run_case(case.data, case.overrides, budget, growth_mb)
        rep.cases += 1
        rep.counts[case.family][out.kind] += 1
        rep.slowest = max(rep.slowest, (out.seconds, i))
        if out.kind in FAILURES:
            failing.append(case)
            f = rep.failures.setdefault(out.signature, {"kind": out.kind, "count": 0, "case": i, "family": case.family,
                                                        "seed": case.seed_name, "ops": case.ops, "detail": out.detail,
                                                        "overrides": list(case.overrides), "input": case.data,
                                                        "trace": out.trace, "saved": 0})
            f["count"] += 1
            if f["count"] == 1 and out.kind in ("crash", "position", "render", "internals"):
                f["minimized"] = minimize(case.data, case.overrides, out.signature, budget, minimize_tries)
            if save and f["saved"] < 3:
                f["saved"] += 1
                _save(save, out, case, f)
        if progress and (i - start + 1) % 1000 == 0:
            print(f"  {i - start + 1:,} cases, {time.perf_counter() - t0:.0f} s, {len(failing)} failing", file=sys.stderr)
    rep.seconds = time.perf_counter() - t0
    if cli:
        rng = random.Random(seed)
        others = [make_case(seed, i, m, families) for i in rng.sample(range(start, start + n), min(n, cli))]
        picked = (failing[: cli // 2] + others)[:cli]
        for case in picked:
            out = run_cli(case, timeout=max(30.0, budget * 5))
            rep.cli[out.kind] += 1
            if out.kind == "cli":
                rep.failures.setdefault(out.signature, {"kind": "cli", "count": 0, "case": case.index, "family": case.family,
                                                        "seed": case.seed_name, "ops": case.ops, "detail": out.detail,
                                                        "overrides": list(case.overrides), "input": case.data,
                                                        "trace": "", "saved": 0})["count"] += 1
    return rep


def _save(folder: Path, out: Outcome, case: Case, f: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{out.kind}-{hashlib.sha1(out.signature.encode()).hexdigest()[:8]}-{case.index}"
    (folder / f"{tag}.nnspec").write_bytes(case.data)
    if f.get("minimized") is not None and f["case"] == case.index:
        (folder / f"{tag}.min.nnspec").write_bytes(f["minimized"])
    note = [f"{out.kind}: {out.detail}", f"signature: {out.signature}", f"case {case.index} of seed {case.seed_name}, "
            f"{case.family}: {' '.join(case.ops)}"] + [f"--set {o}" for o in case.overrides] + ["", out.trace]
    (folder / f"{tag}.txt").write_text("\n".join(note))


def table(rep: Report) -> str:
    kinds = ["ok", "error", *FAILURES[:-1]]
    out = [f"{'outcome':10s}" + "".join(f"{f:>9s}" for f in (*FAMILIES, "total"))]
    for k in kinds:
        row = [rep.counts[f][k] for f in FAMILIES]
        out.append(f"{k:10s}" + "".join(f"{x:9,d}" for x in (*row, sum(row))))
    tot = [sum(rep.counts[f].values()) for f in FAMILIES]
    out.append(f"{'cases':10s}" + "".join(f"{x:9,d}" for x in (*tot, sum(tot))))
    return "\n".join(out)


def _shown(b: bytes, limit: int = 400) -> str:
    r = repr(b)
    return r if len(r) <= limit else r[:limit] + f"... ({len(b):,} bytes)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, help="how many cases")
    ap.add_argument("seed", type=int, help="the random seed (case I of a seed is always the same input)")
    ap.add_argument("--start", type=int, default=0, help="the first case's number (default 0)")
    ap.add_argument("--cli", type=int, default=0, metavar="K", help="also run K cases through `python -m nnc.cli check`")
    ap.add_argument("--save", type=Path, metavar="DIR", help="write failing inputs (and minimized ones) here")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds a case may take (default 2)")
    ap.add_argument("--mem-mb", type=int, default=1024, help="address space allowed beyond the start's (default 1024)")
    ap.add_argument("--growth-mb", type=float, default=100.0, help="peak RSS growth in one case flagged (default 100)")
    ap.add_argument("--only", choices=FAMILIES, action="append", help="only this family of mutations (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    a = ap.parse_args(argv)
    sys.set_int_max_str_digits(4300)  # Python's default, whatever the environment says
    vm = int(re.search(r"VmSize:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024 \
        if Path("/proc/self/status").exists() else 0
    if vm:
        limit = vm + a.mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    families = tuple(f for f in FAMILIES if f in a.only) if a.only else FAMILIES
    rep = fuzz(a.n, a.seed, a.start, a.budget, a.growth_mb, a.save, a.cli, progress=not a.json, families=families)
    failed = sum(f["count"] for f in rep.failures.values())
    if a.json:
        print(json.dumps({"cases": rep.cases, "seconds": round(rep.seconds, 2), "failed": failed,
                          "outcomes": {f: dict(c) for f, c in rep.counts.items()}, "cli": dict(rep.cli),
                          "slowest": {"seconds": round(rep.slowest[0], 3), "case": rep.slowest[1]},
                          "failures": [{"signature": s,
                                        **{k: v for k, v in f.items() if k not in ("input", "minimized", "trace")},
                                        "input": _shown(f["input"]), "minimized": _shown(f.get("minimized", b""))}
                                       for s, f in rep.failures.items()]}))
        return 1 if failed else 0
    print(f"{rep.cases:,} cases (seed {a.seed}, from case {a.start}) in {rep.seconds:.1f} s, "
          f"{rep.cases / max(rep.seconds, 1e-9):,.0f} cases/s; slowest case {rep.slowest[1]}: {rep.slowest[0]:.2f} s")
    print(table(rep))
    if a.cli:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(rep.cli.items()))
        print(f"through the CLI: {sum(rep.cli.values())} cases, {shown}")
    for s, f in sorted(rep.failures.items(), key=lambda kv: -kv[1]["count"]):
        print(f"\n{f['kind'].upper()} x{f['count']}: {s}\n  {f['detail']}\n  first: case {f['case']} ({f['seed']}, "
              f"{f['family']}: {' '.join(f['ops'])})")
        for o in f["overrides"]:
            print(f"  --set {o[:200]}")
        if f.get("minimized") is not None:
            print(f"  minimized: {_shown(f['minimized'])}")
    if a.save and rep.failures:
        print(f"\nfailing inputs written to {a.save}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
