"""bench/fuzz.py as a test: a fixed seed's mutated specs go through the front end as `nnc check`
runs it (no crash, no hang, no runaway memory, every position inside the file, every message
free of Python internals), and a few through the real command. Each run is a child process, so
that its address-space limit and alarms stay out of the test worker; the two halves of the
in-process cases are separate tests, so `pytest -n 2` runs them side by side."""

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import ROOT

SEED = 1128
CASES = 2000  # per half: ~5 s each on one core


def fuzz_run(*args: str) -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz.py"), *args, "--json"], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert r.stdout.strip(), r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    failures = "\n".join(f"{f['kind']} x{f['count']}: {f['detail']}\n  case {f['case']} ({f['seed']}, {f['family']}: "
                         f"{' '.join(f['ops'])}) {' '.join('--set ' + o for o in f['overrides'])}\n"
                         f"  minimized: {f['minimized']}" for f in report["failures"])
    assert not report["failures"], failures
    assert r.returncode == 0, r.stderr[-3000:]
    return report


@pytest.mark.parametrize("start", [0, CASES], ids=["first_half", "second_half"])
def test_mutated_specs_are_ok_or_user_errors(start):
    report = fuzz_run(str(CASES), str(SEED), "--start", str(start))
    assert report["cases"] == CASES
    outcomes = {k: sum(o.get(k, 0) for o in report["outcomes"].values()) for k in ("ok", "error")}
    assert outcomes["ok"] + outcomes["error"] == CASES
    assert outcomes["error"] > CASES / 2 and outcomes["ok"] > 0  # the mutations do break specs, not all of them
    assert set(report["outcomes"]) == {"byte", "token", "line", "set"}


def test_mutated_specs_through_the_cli():
    report = fuzz_run("10", str(SEED), "--start", str(2 * CASES), "--cli", "10")
    assert sum(report["cli"].values()) == 10


# ---------------------------------------------------------------- the oracle itself


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("nnc_bench_fuzz", ROOT / "bench" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def test_the_oracle_tells_each_outcome(fuzz, monkeypatch):
    """The engine is not vacuous: a crash, a hang, a position outside the file and a message
    with a dict in it are each reported as such."""
    import time

    import nnc.compiler.load as load
    from nnc.diagnostics import Diagnostic, NncError, Span

    good = (ROOT / "specs" / "two_layer.nnspec").read_bytes()
    assert fuzz.run_case(good).kind == "ok"
    assert fuzz.run_case(b"model M {\n").kind == "error"
    assert fuzz.run_case(b"\xff").kind == "error"

    def raising(exc):
        def load_text(*a, **k):
            raise exc
        return load_text

    monkeypatch.setattr(load, "load_text", raising(KeyError("x")))
    out = fuzz.run_case(good)
    assert out.kind == "crash" and out.detail == "KeyError: 'x'" and "load_text" in out.signature
    monkeypatch.setattr(load, "load_text", raising(NncError(Diagnostic("far", Span(9, 1, 9, 2)))))
    assert fuzz.run_case(b"a\nb\n").kind == "position"  # no source: where would 9:1 be?
    err = NncError(Diagnostic("far", Span(2, 9, 2, 10))).with_document(load.Document(fuzz.NAME, "a\nb\n"))
    monkeypatch.setattr(load, "load_text", raising(err))
    assert fuzz.run_case(b"a\nb\n").kind == "position"
    monkeypatch.setattr(load, "load_text", raising(NncError("got {'kind': 'sgd', 'args': []}")))
    assert fuzz.run_case(good).kind == "internals"
    monkeypatch.setattr(load, "load_text", lambda *a, **k: time.sleep(5))
    t0 = time.perf_counter()
    assert fuzz.run_case(good, budget=0.2).kind == "hang" and time.perf_counter() - t0 < 2
