"""Run directories under abuse: a real `nnc train` SIGKILLed at chosen moments and resumed, two
runs into one folder, the dead ends a killed run used to leave, and finished runs resumed.
Only the killed runs are separate processes; the rest runs the CLI in this one."""

import fcntl
import json
import subprocess
import sys

import pytest
from conftest import ROOT
from export_cases import nnc_main as run_nnc  # in this process: no second `import torch`

SPEC = """model M {
    input vector(64)
    dense fc1 16
    relu
    dropout 0.2
    dense fc2 10
}
optimizer adam(lr=3e-3)
data digits, val 0.15, test 0.15, preprocess mean_image normalize
train batch 128, epochs 3, monitor_every 3
"""

# Runs the real CLI in a child process that SIGKILLs itself at one moment of the run: the
# process dies as it would to `kill -9` or the OOM killer, without any handler running.
KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
moment, n = {moment!r}, {n}
calls = [0]

def die_at_nth(f):
    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            if moment == "metrics line":  # half a JSON line reaches the disk, then the machine dies
                self, record = a[0], a[1]
                self.file.write(__import__("json").dumps(record)[:25])
                self.file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return f(*a, **k)
    return wrapped

import nnc.files, nnc.runtime.train as T, nnc.runtime.run_dir as R
if moment == "checkpoint write":  # the temp file is written, not yet renamed over the checkpoint
    nnc.files.os.fsync = die_at_nth(nnc.files.os.fsync)
elif moment == "step":
    T.step = die_at_nth(T.step)
elif moment == "metrics line":
    R.MetricsLog.write = die_at_nth(R.MetricsLog.write)
elif moment == "finish":
    T.finish = die_at_nth(T.finish)
from nnc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def killed_run(spec, out, moment: str, n: int):
    code = KILLER.format(root=str(ROOT), moment=moment, n=n)
    return subprocess.run([sys.executable, "-c", code, "train", str(spec), "--out", str(out), "--device", "cpu",
                           "-q"], capture_output=True, text=True, timeout=300)


def epochs(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"train_loss"' in l]


def final(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    (d / "m.nnspec").write_text(SPEC)
    return d / "m.nnspec", final(run_nnc("train", d / "m.nnspec", "--out", d / "run", "--json", "--device", "cpu")), \
        epochs(d / "run")


# (moment, which call dies): the 1st fsync is the first checkpoint's write, the 4th epoch 2's
# `best` (epoch 0's last, epoch 1's best and last come before it); step 15 is inside epoch 2;
# the 9th metrics line is epoch 2's record (after 4 + 1 + 3 lines)
@pytest.mark.parametrize("moment,n", [("checkpoint write", 4), ("checkpoint write", 1), ("step", 15),
                                      ("metrics line", 9), ("finish", 1)])
def test_sigkill_then_resume_ends_like_the_uninterrupted_run(tmp_path, uninterrupted, moment, n):
    spec, want, want_epochs = uninterrupted
    out = tmp_path / "run"
    r = killed_run(spec, out, moment, n)
    assert r.returncode == -9, r.stderr
    if moment == "checkpoint write":
        assert list(out.glob(".*.safetensors.*.tmp"))  # the kill left a half-done write behind
    if (out / "last.safetensors").exists():
        got = final(run_nnc("train", "--resume", out, "--json", "--device", "cpu"))
    else:  # killed before its first checkpoint was written: no dead end either
        r = run_nnc("train", "--resume", out)
        assert r.returncode == 1 and f"{out} holds no checkpoint: its run stopped before the first one" in r.stderr
        assert f"nnc train SPEC --out {out}" in r.stderr
        (out / "metrics.jsonl").write_text('{"monitor": "step", "epoch": 1, "step": 0}\n')  # (older nnc's order)
        got = final(run_nnc("train", spec, "--out", out, "--json", "--device", "cpu"))
    assert not list(out.glob(".*.tmp"))
    assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-6)
    assert got["test_accuracy"] == want["test_accuracy"] and got["best_epoch"] == want["best_epoch"]
    rows = epochs(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for a, b in zip(rows, want_epochs):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)


def test_a_failed_start_leaves_no_folder(tmp_path):
    (tmp_path / "m.nnspec").write_text(SPEC.replace("data digits", 'data npz("missing.npz")'))
    r = run_nnc("train", tmp_path / "m.nnspec", "--out", tmp_path / "new" / "run")
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "kept").mkdir()  # a folder the user made stays
    r = run_nnc("train", tmp_path / "m.nnspec", "--out", tmp_path / "kept")
    assert r.returncode == 1 and (tmp_path / "kept").is_dir()


def test_two_runs_never_share_a_folder(tmp_path):
    """A run holds its folder's lock for its whole life: a second one is refused at once, and the
    freshness check is repeated under the lock (the one before it is only a courtesy)."""
    (tmp_path / "m.nnspec").write_text(SPEC)
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as f:  # as a running `nnc train` holds it
        f.write("4242\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX)
        r = run_nnc("train", tmp_path / "m.nnspec", "--out", out)
        assert r.returncode == 1 and f"another nnc train is running in {out} (pid 4242)" in r.stderr
        r = run_nnc("train", tmp_path / "m.nnspec", "--out", tmp_path / "other", "--epochs", "1")
        assert r.returncode == 0, r.stderr
        r = run_nnc("train", "--resume", tmp_path / "other", "--epochs", "2", "--out", out)
        assert r.returncode == 1 and "another nnc train is running" in r.stderr
    assert not (out / "metrics.jsonl").exists()

    from nnc.compiler.checks import check
    from nnc.compiler.load import load_spec
    from nnc.diagnostics import NncError
    from nnc.runtime.train import train

    with pytest.raises(NncError, match="holds a run already") as e:
        train(check(load_spec(str(tmp_path / "m.nnspec"))), tmp_path / "other", device="cpu", quiet=True)
    assert e.value.exit_code == 2


def test_resuming_a_finished_run_says_so(tmp_path):
    """An early-stopped run resumed trains no more epochs; more --epochs would stop again at once."""
    (tmp_path / "m.nnspec").write_text(SPEC.replace("epochs 3", "epochs 30, early_stop(patience=1)")
                                       .replace("adam(lr=3e-3)", "sgd(lr=0.5)"))
    out = tmp_path / "run"
    first = final(run_nnc("train", tmp_path / "m.nnspec", "--out", out, "--json", "--device", "cpu"))
    assert first["epochs"] < 30
    r = run_nnc("train", "--resume", out, "--json", "--device", "cpu")
    again = final(r)
    assert again["epochs"] == first["epochs"] and again["test_loss"] == first["test_loss"]
    assert f"{out} is finished (it stopped early at epoch {first['epochs']}" in r.stderr
    assert len(epochs(out)) == first["epochs"]
    r = run_nnc("train", "--resume", out, "--epochs", "40")
    assert r.returncode == 2 and "more epochs would stop again at once" in r.stderr


def test_a_crash_mid_line_and_leftover_temp_files_do_not_stop_a_resume(tmp_path, uninterrupted):
    spec, _, _ = uninterrupted
    out = tmp_path / "run"
    r = run_nnc("train", spec, "--out", out, "--epochs", "2", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')
    (out / ".last.safetensors.abc123.tmp").write_bytes(b"\0" * 100)
    got = final(run_nnc("train", "--resume", out, "--epochs", "3", "--json", "--device", "cpu"))
    assert got["epochs"] == 3 and not (out / ".last.safetensors.abc123.tmp").exists()
    assert [r["epoch"] for r in epochs(out)] == [1, 2, 3]
