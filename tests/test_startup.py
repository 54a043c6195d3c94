"""What `nnc` does to start and end fast (docs/benchmarks.md, "End to end"): the digits read
without scikit-learn, a training run that imports neither scikit-learn, torch._dynamo nor
matplotlib, pictures drawn by a background process, and an exit that skips finalization but
loses no output."""

import json
import subprocess
import sys
import time

import numpy as np
from conftest import SPECS, run_nnc

from nnc.compiler.vocab.sources import SOURCES

PICTURES = ("loss.png", "accuracy.png", "dashboard.png", "filters.png")


def test_digits_are_scikit_learns_without_importing_it():
    from sklearn.datasets import load_digits

    ours = SOURCES["digits"].load(None, None, None)
    d = load_digits()
    assert ours.x.dtype == np.float32 and ours.y.dtype == np.int64
    assert np.array_equal(ours.x, d.data.astype(np.float32)) and np.array_equal(ours.y, d.target)
    assert ours.classes == [str(c) for c in d.target_names]


def _wait_for(paths, seconds=120):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not all(p.is_file() for p in paths):
        time.sleep(0.2)
    return [p.name for p in paths if not p.is_file()]


def test_train_imports_only_what_it_uses_and_draws_its_pictures_in_the_background(tmp_path):
    out = tmp_path / "run"
    code = ("import json, sys, nnc.cli\n"
            f"rc = nnc.cli.main(['train', {str(SPECS / 'digits_cnn.nnspec')!r}, '--out', {str(out)!r}, '--epochs', '1', "
            "'--json'])\n"
            "heavy = ('sklearn', 'scipy', 'matplotlib', 'torch._dynamo', 'sympy', 'onnx')\n"
            "print(json.dumps(sorted(h for h in heavy if h in sys.modules)))\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    final, imported = (json.loads(l) for l in r.stdout.strip().splitlines()[-2:])
    assert imported == []
    assert final["plots"] == [str(out / p) for p in PICTURES]
    assert _wait_for([out / p for p in PICTURES]) == []  # drawn by the detached process
    assert not (out / "plots.log").exists()
    for p in PICTURES:  # never seen half-written: each is renamed into place
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp.png"))

    for p in PICTURES:
        (out / p).unlink()
    r = run_nnc("plot", out)  # drawn again, in the foreground, from the run directory alone
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"plot: {out / p}" for p in PICTURES]
    assert all((out / p).stat().st_size > 3000 for p in PICTURES)
    assert run_nnc("plot", tmp_path).returncode == 1


def test_plots_off_draws_nothing_and_the_exit_loses_no_output(tmp_path):
    """`--plots off`; the CLI's os._exit after main: piped stdout is complete, codes are kept."""
    r = run_nnc("train", SPECS / "digits_mlp.nnspec", "--out", tmp_path / "run", "--epochs", "1", "--plots", "off")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"best checkpoint: {tmp_path / 'run' / 'best.safetensors'}"
    assert not list((tmp_path / "run").glob("*.png"))
    r = run_nnc("check", "--json", SPECS / "alexnet.nnspec", SPECS / "vgg16.nnspec")
    assert r.returncode == 0 and len(json.loads(r.stdout)["specs"]) == 2
    r = run_nnc("check", tmp_path / "missing.nnspec")
    assert r.returncode == 1 and "no such file" in r.stderr
