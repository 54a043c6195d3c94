"""`nnc search`: sampling, resolving ranges into text, narrowing, the border warning, and a real
(tiny) search on digits driven through the CLI; the run lock, Ctrl-C (the finished trials are
still reported, re-running continues), exploded trials as TPE sees them, pruning, --jobs
progress lines, option checks and the plot's layout."""

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from conftest import SPECS, run_nnc

from nnc.cli import main as nnc_main
from nnc.compiler.load import load_spec, load_text
from nnc.compiler.values import SearchRange
from nnc.diagnostics import Span
from nnc.runtime import search as search_mod
from nnc.runtime.plots import exploded_y, search_scatter
from nnc.runtime.search import Config, Param, border_warnings, narrow, resolve_text, suggest

SPAN = Span(1, 1, 1, 2)


def _draws(r: SearchRange, n: int = 2000) -> list:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        t = study.ask()
        out.append(suggest(t, Param.of(r)))
        study.tell(t, 0.0)
    return out


def test_loguniform_is_sampled_uniformly_in_log_space():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    v = np.array(_draws(SearchRange("optimizer.lr", "loguniform", (1e-6, 1e-1), SPAN)))
    assert v.min() >= 1e-6 and v.max() <= 1e-1
    # five decades, about a fifth of the draws in each (a linear draw would put ~90% in the last)
    counts = np.histogram(np.log10(v), bins=5, range=(-6, -1))[0] / len(v)
    assert np.all(np.abs(counts - 0.2) < 0.04), counts
    assert 10 ** -4 < np.median(v) < 10 ** -3


@pytest.mark.parametrize("dist,args", [("uniform", (0.2, 0.6)), ("intuniform", (16, 64)), ("choice", (0.5, 0.9, 0.99))])
def test_other_ranges_stay_inside(dist, args):
    v = _draws(SearchRange("x.y", dist, args, SPAN), 300)
    if dist == "choice":
        assert set(v) == set(args)
    else:
        assert min(v) >= args[0] and max(v) <= args[1]
        assert all(isinstance(x, int) for x in v) == (dist == "intuniform")


SPEC = """nnspec 1
# comments and layout survive
model M {
    input vector(64)
    dense fc1 32
    relu
    dropout uniform(0.1, 0.5)   # searched
    dense fc2 10
}
optimizer sgd(lr=loguniform(1e-4, 1e-1), momentum=choice(0.5, 0.9))
regularize l2 loguniform(1e-6, 1e-2)
data digits
"""


def test_resolved_text_replaces_each_range_and_keeps_the_rest():
    spec = load_text(SPEC, "s.nnspec")
    assert sorted(r.path for r in spec.search) == ["model.drop1.p", "optimizer.lr", "optimizer.momentum", "regularize.l2"]
    values = {r: {"model.drop1.p": 0.25, "optimizer.lr": 0.003, "optimizer.momentum": 0.9, "regularize.l2": 1e-5}[r.path]
              for r in spec.search}
    text = resolve_text(spec.text, values)
    assert "dropout 0.25   # searched" in text and "# comments and layout survive" in text
    assert "sgd(lr=0.003, momentum=0.9)" in text and "l2 1e-05" in text
    resolved = load_text(text, "s.nnspec")
    assert resolved.search == ()
    assert resolved.optimizer.params.lr == 0.003 and resolved.regularize.l2 == 1e-5


def test_fine_ranges_narrow_around_the_top_trials_in_log_space():
    lr = SearchRange("optimizer.lr", "loguniform", (1e-6, 1e0), SPAN)
    p = SearchRange("model.drop1.p", "uniform", (0.0, 0.8), SPAN)
    (nlr, np_) = narrow([Param.of(lr), Param.of(p)], [{"optimizer.lr": 1e-3, "model.drop1.p": 0.3},
                                                      {"optimizer.lr": 1e-2, "model.drop1.p": 0.4}])
    # one decade of top values; margin max(a quarter of that, 5% of the six-decade range) = 0.3 decade
    assert nlr.lo == pytest.approx(10 ** -3.3) and nlr.hi == pytest.approx(10 ** -1.7)
    assert np_.lo == pytest.approx(0.26) and np_.hi == pytest.approx(0.44)  # margin: 5% of the range (0.04)
    (edge,) = narrow([Param.of(lr)], [{"optimizer.lr": 1e-6}, {"optimizer.lr": 2e-6}])
    assert edge.lo == 1e-6  # never outside the spec's range


def test_border_warning_in_log_space():
    spec = load_text(SPEC, "s.nnspec")
    assert border_warnings(spec, {"optimizer.lr": 10 ** -2.5, "regularize.l2": 1e-4, "model.drop1.p": 0.3}) == []
    (w,) = border_warnings(spec, {"optimizer.lr": 10 ** -1.3, "regularize.l2": 1e-4, "model.drop1.p": 0.3})
    assert "optimizer.lr" in w and "upper border of loguniform(0.0001, 0.1) in log space" in w and "line 10" in w
    # 0.0002 is at 10% of the range linearly but 10 ** -3.7 is 10% of the way in log space: only the latter warns
    assert border_warnings(spec, {"optimizer.lr": 10 ** -3.65, "regularize.l2": 1e-4}) == []
    (w,) = border_warnings(spec, {"regularize.l2": 10 ** -5.7})
    assert "lower border" in w
    (w,) = border_warnings(spec, {"model.drop1.p": 0.48})
    assert "upper border of uniform(0.1, 0.5)" in w and "log space" not in w


DIGITS = """nnspec 1
model M {
    input vector(64)
    dense fc1 32
    relu
    dropout uniform(0.0, 0.3)
    dense fc2 10
}
# lr reaches far into the exploding region on purpose; the l2 range is deliberately narrow
optimizer sgd(lr=loguniform(1e-3, 1e3), momentum=0.9)
regularize l2 loguniform(1e-5, 2e-5)
data digits, val 0.15, test 0.15, preprocess mean_image normalize
train batch 64, epochs 5
"""


def test_search_on_digits_end_to_end(tmp_path, capsys):
    spec_path = tmp_path / "s.nnspec"
    spec_path.write_text(DIGITS)
    out = tmp_path / "search"
    args = ["search", spec_path, "--trials", "5", "--epochs", "2", "--coarse-epochs", "1", "--out", out,
            "--seed", "0", "--device", "cpu"]
    r = run_nnc(*args, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    trials = res["trials"]
    assert len(trials) == 10 and {t["stage"] for t in trials} == {"coarse", "fine"}
    # one line per trial on stderr, its stage kept (rich would have read [coarse] as markup)
    assert "trial   0 [coarse] model.drop1.p=" in r.stderr and "[fine] " in r.stderr

    # every sampled value inside its range
    spec = load_spec(str(spec_path))
    for t in trials:
        for rng in spec.search:
            assert rng.args[0] <= t["params"][rng.path] <= rng.args[1]

    # lr spans several decades; the big ones explode and stop within their first epoch
    lrs = [t["params"]["optimizer.lr"] for t in trials if t["stage"] == "coarse"]
    assert math.log10(max(lrs) / min(lrs)) > 2
    exploded = [t for t in trials if t["state"] == "exploded"]
    assert exploded, trials
    for t in exploded:
        assert t["reason"].startswith("training diverged at epoch 1") and t["epochs_run"] == 0
        assert t["params"]["optimizer.lr"] > 1e-1
        # stopped inside its first epoch: no epoch was logged, no best checkpoint was written
        run_dir = out / f"trial_{t['number']:03d}"
        assert (run_dir / "metrics.jsonl").read_text() == "" and not (run_dir / "best.safetensors").exists()

    # optuna's storage records log-scale distributions for the loguniform ranges
    study = optuna.load_study(study_name="nnc-search", storage=f"sqlite:///{out / 'study.db'}")
    dists = study.trials[0].distributions
    assert dists["optimizer.lr"].log and dists["regularize.l2"].log and not dists["model.drop1.p"].log
    assert (dists["optimizer.lr"].low, dists["optimizer.lr"].high) == (1e-3, 1e3)
    assert all(t["value"] is not None for t in trials if t["state"] == "complete")

    # the fine stage sampled lr from a narrower range around the best coarse trials
    fine = [t["params"]["optimizer.lr"] for t in trials if t["stage"] == "fine"]
    assert math.log10(max(fine) / min(fine)) < math.log10(max(lrs) / min(lrs))

    # the table is sorted by val accuracy, best first; the best's l2 is on the border of its
    # deliberately narrow range exactly when the warning says so
    values = [t["value"] for t in trials if t["value"] is not None]
    assert values == sorted(values, reverse=True) and res["best"]["value"] == values[0]
    l2 = res["best"]["params"]["regularize.l2"]
    pos = math.log10(l2 / 1e-5) / math.log10(2)
    assert any("regularize.l2" in w for w in res["warnings"]) == (pos <= 0.1 or pos >= 0.9)
    assert "warning: best " in r.stderr or not res["warnings"]
    assert (out / "search.png").stat().st_size > 5000

    # the best spec is plain: check accepts it, train trains it (in this process: the CLI
    # itself was driven above)
    best = out / "best.nnspec"
    assert "loguniform" not in best.read_text() and best.read_text().startswith("# resolved by nnc search")
    # it keeps the spec's `train epochs` (for the full run) and says what the trial trained
    ran = res["best"]["epochs_run"]
    assert f"after {ran} epoch(s)\n# (the trial trained {ran} epoch(s); `train epochs` below is the spec's 5" in best.read_text()
    assert "train batch 64, epochs 5\n" in best.read_text()
    assert nnc_main(["check", str(best)]) == 0
    assert nnc_main(["train", str(best), "--epochs", "1", "--out", str(tmp_path / "best_run"), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test_accuracy"] > 0.5

    # a larger --trials continues the study with the trials it lacks; the table shows every trial
    assert nnc_main([*map(str, args[:3]), "6", *map(str, args[4:]), "--stages", "coarse"]) == 0
    again = capsys.readouterr().out
    assert "(5 of 6 trials done by an earlier run)" in again and "11 trials, by val_accuracy" in again
    assert "exploded@1" in again and (out / "trial_010" / "metrics.jsonl").is_file()


NARROW = """nnspec 1
model M {
    input vector(64)
    dense fc1 32
    relu
    dense fc2 10
}
init weights he, bias constant(0)
# plain SGD one to two decades below a good learning rate (~0.1): within one epoch, more is better
optimizer sgd(lr=loguniform(1e-3, 1e-2))
data digits, val 0.15, test 0.15, preprocess mean_image normalize
train batch 16, epochs 1
"""


def test_border_warning_fires_for_a_narrow_range(tmp_path, capsys):
    # sampler seed 7 draws six lrs at 0.08, 0.78, 0.44, 0.72, 0.98, 0.54 of the range in log10
    # space: the largest is 0.2 decade clear of the next, within 10% of the upper border
    spec_path = tmp_path / "narrow.nnspec"
    spec_path.write_text(NARROW)
    code = nnc_main(["search", str(spec_path), "--trials", "6", "--epochs", "1", "--stages", "coarse", "--out",
                     str(tmp_path / "s"), "--device", "cpu", "--seed", "7", "--json"])
    r = capsys.readouterr()
    assert code == 0, r.err
    res = json.loads(r.out)
    done = sorted((t for t in res["trials"] if t["value"] is not None), key=lambda t: t["params"]["optimizer.lr"])
    assert len(done) == 6
    # the design holds: the metric rises with lr across the range, so the best is the largest lr
    assert done[-1]["value"] > done[0]["value"] + 0.1, done
    best = res["best"]["params"]["optimizer.lr"]
    assert best == done[-1]["params"]["optimizer.lr"]
    pos = math.log10(best / 1e-3)  # position in log space (the range is one decade)
    assert pos >= 0.9
    (w,) = res["warnings"]
    assert w.startswith(f"best optimizer.lr = {best:g} lies within 10% of the upper border of "
                        "loguniform(0.001, 0.01) in log space (line 10)"), w
    assert "widen the range" in w and f"warning: {w}" in r.err


def test_search_refuses_a_spec_without_ranges(tmp_path, capsys):
    assert nnc_main(["search", str(SPECS / "digits_mlp.nnspec"), "--trials", "1", "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "no search ranges" in err and "Traceback" not in err, err
    assert "optimizer adam(lr=loguniform(1e-4, 1e-1))" in err  # the help line
    t = tmp_path / "r.nnspec"
    t.write_text(DIGITS)
    assert nnc_main(["train", str(t), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "nnc search" in err and "Traceback" not in err, err


FAKE = """nnspec 1
model M {
    input vector(64)
    dense fc1 10
}
optimizer sgd(lr=loguniform(1e-3, 1e-1))
train epochs 3
"""


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--coarse-epochs", "-1"], ["--jobs", "0"], ["--trials", "-1"],
                                  ["--epochs", "two"], ["--stages", "coarse,medium"], ["--stages", "fine,coarse"],
                                  ["--stages", "fine", "--coarse-epochs", "2"]])
def test_search_option_misuse_is_exit_2(tmp_path, argv, capsys):
    spec_path = tmp_path / "s.nnspec"
    spec_path.write_text(FAKE)
    args = ["search", str(spec_path), "--out", str(tmp_path / "s"), *(["--trials", "1"] if "--trials" not in argv else []), *argv]
    try:
        code = nnc_main(args)
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_search_refuses_up_front_what_a_draw_would_stop_at(tmp_path, capsys):
    """A range reaching a value the spec refuses stops the search before its study exists (it
    once ran trials until a draw hit the value); an --out under a file is the user's error."""
    spec_path = tmp_path / "s.nnspec"
    spec_path.write_text(FAKE.replace("loguniform(1e-3, 1e-1)", "choice(0.01, 0.1, -1)"))
    assert nnc_main(["search", str(spec_path), "--trials", "3", "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "this range reaches values the spec refuses: at its choice -1, sgd lr must be > 0" in err, err
    assert not (tmp_path / "s").exists()
    spec_path.write_text(FAKE)
    (tmp_path / "f").write_text("")
    assert nnc_main(["search", str(spec_path), "--trials", "1", "--out", str(tmp_path / "f" / "s")]) == 1
    assert f"cannot create the search directory {tmp_path / 'f' / 's'}: {tmp_path / 'f'} is a file" in capsys.readouterr().err


def test_best_header_says_how_to_reproduce_a_trial_longer_than_the_spec():
    spec = load_text(FAKE, "f.nnspec")  # train epochs 3
    row = {"number": 4, "stage": "fine", "value": 0.9, "epochs_run": 5}
    assert search_mod.best_header(spec, "val_accuracy", row).splitlines()[1] == (
        "# (the trial trained 5 epoch(s); `train epochs` below is the spec's 3: nnc train --epochs 5 reproduces the trial)")
    assert len(search_mod.best_header(spec, "val_accuracy", {**row, "epochs_run": 3}).splitlines()) == 1


def test_stage_epochs_follow_the_options():
    spec = load_text(FAKE, "f.nnspec")  # train epochs 3
    epochs = lambda **kw: search_mod.stage_epochs(Config("f", "o", 1, **kw), spec)
    assert epochs() == {"coarse": 1, "fine": 3}
    assert epochs(epochs=9) == {"coarse": 3, "fine": 9}
    assert epochs(epochs=9, coarse_epochs=2) == {"coarse": 2, "fine": 9}
    assert epochs(stages=("coarse",))["coarse"] == 3  # alone, the coarse stage trains the spec's epochs
    assert epochs(stages=("coarse",), coarse_epochs=1)["coarse"] == 1
    assert epochs(stages=("coarse",), epochs=2)["coarse"] == 2
    assert epochs(stages=("coarse",), epochs=3, coarse_epochs=1)["coarse"] == 1  # the specific option wins


def test_search_refuses_a_spec_without_a_validation_split_before_training(tmp_path, capsys):
    spec_path = tmp_path / "s.nnspec"
    spec_path.write_text(DIGITS.replace("val 0.15", "val 0"))
    code = nnc_main(["search", str(spec_path), "--trials", "1", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"{spec_path}:12:" in err and "has none (val 0)" in err and "help: give the data a validation split" in err
    assert not list(tmp_path.glob("s/trial_*"))


def test_a_second_search_on_the_same_directory_is_refused(tmp_path, capsys):
    spec_path = tmp_path / "f.nnspec"
    spec_path.write_text(FAKE)
    out = tmp_path / "s"
    out.mkdir()
    with open(out / ".lock", "w") as f:  # as a running search holds it
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("4242\n")
        f.flush()
        code = nnc_main(["search", str(spec_path), "--trials", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and f"another nnc search is running in {out} (pid 4242)" in err and "Traceback" not in err
    assert not (out / "study.db").exists()


def _study(out):
    return optuna.load_study(study_name="nnc-search", storage=f"sqlite:///{out / 'study.db'}")


def test_tpe_learns_from_exploded_trials_and_stages_train_their_own_epochs(tmp_path, capsys):
    # --sampler tpe, coarse stage only, 1 epoch per trial (the spec says 5): the trials whose lr
    # explodes are stored PRUNED with no reported value, which TPE reads (it samples from
    # COMPLETE and PRUNED trials and ranks pruned ones below every completed one); FAIL would
    # be invisible to it.
    spec_path = tmp_path / "s.nnspec"
    spec_path.write_text(DIGITS)
    out = tmp_path / "tpe"
    code = nnc_main(["search", str(spec_path), "--trials", "4", "--stages", "coarse", "--coarse-epochs", "1",
                     "--sampler", "tpe", "--out", str(out), "--seed", "0", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    study = _study(out)
    exploded = [t for t in study.trials if t.user_attrs.get("exploded")]
    assert exploded and all(t.state == optuna.trial.TrialState.PRUNED for t in exploded)
    assert all(t.intermediate_values == {} and t.user_attrs["reason"].startswith("training diverged") for t in exploded)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    seen_by_tpe = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(seen_by_tpe) == 4
    assert all(t.user_attrs["epochs"] == 1 for t in study.trials)
    assert "exploded@1" in captured.out and "coarse stage: 1 epoch(s)" in captured.out
    assert "trial   0 [coarse] model.drop1.p=" in captured.err
    # best.nnspec keeps the spec's epochs and says what the trial trained
    best = (out / "best.nnspec").read_text().splitlines()
    assert best[0].startswith("# resolved by nnc search from ") and "(coarse stage), val_accuracy" in best[0]
    assert best[0].endswith("after 1 epoch(s)")
    assert best[1] == "# (the trial trained 1 epoch(s); `train epochs` below is the spec's 5, for the full run)"
    assert "train batch 64, epochs 5" in best


def _fake_train(score, interrupt_at=None, seen=None):
    """Stands in for train(): reports score(lr) per epoch to the search's callback; raises
    KeyboardInterrupt inside trial `interrupt_at` (as Ctrl-C would); records what it saw."""

    def train(graph, out, device, quiet, callbacks):
        (cb,) = callbacks
        trial = cb.trial.number
        if seen is not None:
            seen.append(trial)
            with open(out.parent / ".lock") as f:  # the run lock is held while trials run
                with pytest.raises(BlockingIOError):
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                assert f.read().strip() == str(os.getpid())
        for epoch in range(1, graph.spec.train.epochs + 1):
            if trial == interrupt_at and epoch == 2:
                raise KeyboardInterrupt
            cb.epoch_end(None, {"epoch": epoch, "val_accuracy": score(graph.spec.optimizer.params.lr)})
        return {}

    return train


def test_interrupt_keeps_the_finished_trials_and_the_lock_is_held(tmp_path, monkeypatch):
    spec_path = tmp_path / "f.nnspec"
    spec_path.write_text(FAKE)
    seen = []
    monkeypatch.setattr("nnc.runtime.train.train", _fake_train(lambda lr: lr, interrupt_at=2, seen=seen))
    cfg = Config(str(spec_path), str(tmp_path / "s"), 5, stages=("coarse",))
    res = search_mod.search(cfg)
    assert res.interrupted and seen == [0, 1, 2]
    states = {t["number"]: (t["state"], t["reason"]) for t in res.trials}
    assert states == {0: ("complete", ""), 1: ("complete", ""), 2: ("fail", "interrupted")}
    assert (tmp_path / "s" / "best.nnspec").is_file() and (tmp_path / "s" / "search.png").is_file()
    assert res.best["number"] in (0, 1) and res.best["value"] == max(t["value"] for t in res.trials[:2])


def test_a_clearly_worse_trial_is_pruned(tmp_path, monkeypatch):
    # the metric is log10(lr): after 4 completed trials (the pruner's start-up), a trial below
    # the median after its first epoch is stopped there; its last epoch is never reached
    spec_path = tmp_path / "f.nnspec"
    spec_path.write_text(FAKE)
    monkeypatch.setattr("nnc.runtime.train.train", _fake_train(lambda lr: math.log10(lr) + 3))
    res = search_mod.search(Config(str(spec_path), str(tmp_path / "s"), 12, stages=("coarse",), seed=3))
    pruned = [t for t in res.trials if t["state"] == "pruned"]
    assert pruned, res.trials
    for t in pruned:
        before = sorted(u["value"] for u in res.trials if u["value"] is not None and u["number"] < t["number"])
        assert len(before) >= 4 and t["last"] < np.median(before) and t["epochs_run"] == 1
        assert t["reason"].startswith("pruned after epoch 1")
    assert res.best["state"] == "complete"


QUICK = """nnspec 1
model M {
    input vector(64)
    dense fc1 16
    relu
    dense fc2 10
}
optimizer sgd(lr=loguniform(1e-2, 1e-1), momentum=0.9)
data digits, val 0.15, test 0.15, preprocess mean_image normalize
train batch 64, epochs 10
"""


def test_ctrl_c_mid_search_reports_then_the_same_command_continues(tmp_path, capsys):
    spec_path = tmp_path / "q.nnspec"
    spec_path.write_text(QUICK)
    out = tmp_path / "s"
    args = ["search", spec_path, "--trials", "2", "--stages", "coarse", "--coarse-epochs", "5", "--out", out,
            "--device", "cpu"]
    p = subprocess.Popen([sys.executable, "-m", "nnc.cli", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().startswith("trial   0 [coarse] ")  # the first trial finished
    deadline = time.time() + 60
    while not (out / "trial_001" / "spec.nnspec").exists() and time.time() < deadline:  # trial 1 is training
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert stderr.rstrip().endswith("interrupted; re-run the same command to continue") and "Traceback" not in stderr
    assert "2 trials, by val_accuracy" in stdout and "failed (interrupted)" in stdout and "best: trial 0" in stdout
    assert (out / "best.nnspec").is_file() and (out / "search.png").is_file()

    assert nnc_main(list(map(str, args))) == 0  # the same command runs what is left: one trial
    again = capsys.readouterr().out
    assert "(1 of 2 trials done by an earlier run)" in again
    assert "3 trials, by val_accuracy" in again and again.count("complete") == 2
    assert [t.state.name for t in _study(out).trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert _study(out).trials[1].user_attrs["reason"] == "interrupted"

    # a finished study: the same command, or --trials 0, reports it and trains nothing
    assert nnc_main(list(map(str, args))) == 0
    assert "(2 of 2 trials done by an earlier run)" in capsys.readouterr().out and len(_study(out).trials) == 3
    assert nnc_main(["search", str(spec_path), "--trials", "0", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "3 trials, by val_accuracy" in report and "stage:" not in report and len(_study(out).trials) == 3
    assert nnc_main(["search", str(spec_path), "--trials", "0", "--out", str(tmp_path / "none")]) == 1
    assert "holds no study to report" in capsys.readouterr().err


def test_jobs_print_a_line_per_trial(tmp_path, capsys):
    spec_path = tmp_path / "q.nnspec"
    spec_path.write_text(QUICK)
    out = tmp_path / "s"
    code = nnc_main(["search", str(spec_path), "--trials", "2", "--stages", "coarse", "--coarse-epochs", "1",
                     "--jobs", "2", "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err  # the lines are the parent's: the workers' own output is not captured here
    assert code == 0, err
    lines = [l for l in err.splitlines() if l.startswith("trial ")]
    assert sorted(int(l.split()[1]) for l in lines) == [0, 1] and all("[coarse]" in l for l in lines)
    assert len(_study(out).trials) == 2


SIX = """nnspec 1
model M {
    input vector(64)
    dense fc1 intuniform(8, 64)
    relu
    dropout uniform(0.0, 0.5)
    dense fc2 10
}
optimizer sgd(lr=loguniform(1e-3, 1e-1), momentum=uniform(0.5, 0.99))
regularize l2 loguniform(1e-6, 1e-2)
train batch choice(16, 32)
"""


def test_scatter_wraps_panels_and_draws_exploded_trials_below_the_lowest_value(tmp_path):
    import matplotlib.image

    spec = load_text(SIX, "six.nnspec")
    assert len(spec.search) == 6
    rng = np.random.default_rng(0)
    rows = []
    for n in range(8):
        params = {r.path: r.args[n % len(r.args)] for r in spec.search}
        state, value = ("exploded", None) if n % 3 == 0 else ("complete", float(rng.uniform(0.5, 0.9)))
        rows.append({"number": n, "stage": "coarse", "state": state, "value": value, "params": params,
                     "reason": "", "epochs_run": 0, "last": None})
    res = search_mod.SearchResult(spec, "val_accuracy", rows)
    png = matplotlib.image.imread(search_scatter(res.trials, res.spec.search, res.metric, tmp_path / "p.png"))
    h, w = png.shape[:2]
    assert w <= 4 * 3.2 * 80 + 1 and h >= 2 * 2.8 * 80  # two rows of at most four panels
    values = [r["value"] for r in rows if r["value"] is not None]
    assert exploded_y(values) < min(values) - 0.01
