"""Monitors during `nnc train`: explosion, activation statistics (the lecture's init experiment),
dead ReLUs, update ratios and their causes, full-batch optimizers, records in metrics.jsonl,
activations that collapse or saturate, TensorBoard histograms, the pictures, and a run that
stops early."""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import SPECS

from nnc.cli import main as nnc_main
from nnc.compiler.checks import check
from nnc.compiler.load import load_spec, load_text
from nnc.compiler.torch_module import build_model
from nnc.diagnostics import EXIT_DIVERGED
from nnc.runtime import checkpoint
from nnc.runtime.monitors import HIST_SAMPLE, Monitor
from nnc.runtime.plots import dashboard, end_pictures, filters
from nnc.runtime.train import train

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def one_thread():
    """pytest -n 2 on two cores: one intra-op thread per worker (two each oversubscribe the
    cores and OpenMP's spinning makes these small runs 10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _epochs(path):
    return [r for r in _records(path) if "train_loss" in r]


def _mlp(*replace, epochs=1) -> str:
    """digits_mlp.nnspec with (old, new) replacements, trained `epochs` epochs."""
    text = (SPECS / "digits_mlp.nnspec").read_text().replace(
        "epochs 30, early_stop(patience=10, metric=val_loss)", f"epochs {epochs}")
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    return text


def deep_tanh(init: str) -> str:
    """The lecture's experiment: 10 tanh layers of 500 units (on digits instead of random data)."""
    body = "\n".join("    dense 500\n    tanh" for _ in range(10))
    return f"""nnspec 1
model DeepTanh {{
    input vector(64)
{body}
    dense out 10
}}
init       {init}
loss       cross_entropy
optimizer  sgd(lr=1e-3)
data       digits, val 0.1, test 0.2, preprocess mean_image normalize
train      batch 128, epochs 1, monitor_every 1000
"""


def _run(text, name, tmp_path):
    graph = check(load_text(text, name))
    # step 0 is sampled, at init (the default monitors also draw pictures, not needed here)
    train(graph, tmp_path / name, quiet=True, callbacks=[Monitor(graph, histograms=False, pictures=False)])
    recs = _records(tmp_path / name / "metrics.jsonl")
    step = next(r for r in recs if r.get("monitor") == "step")
    assert step["step"] == 0
    return step["activations"], next(r for r in recs if "train_loss" in r)


def test_deep_tanh_small_gaussian_collapses_xavier_does_not(tmp_path):
    small, small_epoch = _run(deep_tanh("weights gaussian(std=0.01), bias constant(0)"), "small", tmp_path)
    xavier, xavier_epoch = _run(deep_tanh("weights xavier, bias constant(0)"), "xavier", tmp_path)
    s_std = [small[f"tanh{i}"]["std"] for i in range(1, 11)]
    x_std = [xavier[f"tanh{i}"]["std"] for i in range(1, 11)]
    # std 0.01: every layer multiplies the spread by about 0.01 * sqrt(500) = 0.22
    assert all(b < 0.5 * a for a, b in zip(s_std, s_std[1:]))
    assert s_std[9] < 1e-5 * s_std[0]
    assert all(abs(small[f"tanh{i}"]["mean"]) < 1e-2 for i in range(1, 11))
    # xavier: the spread stays of the same order in every layer
    assert min(x_std) > 0.2 and x_std[9] > 0.3 * x_std[0]
    assert xavier["tanh10"]["saturated"] < 0.05
    # the collapse is a warning, and the tiny updates it causes are blamed on it, not on the lr
    (collapse,) = [w for w in small_epoch["warnings"] if w.startswith("activations collapse")]
    assert "at tanh1 ->" in collapse and "at tanh10" in collapse and "xavier" in collapse
    assert not any("learning rate too low" in w for w in small_epoch["warnings"])
    assert any("vanish with the collapsed activations" in w for w in small_epoch["warnings"])
    assert not any("collapse" in w or "saturated" in w for w in xavier_epoch.get("warnings", []))


def test_saturated_tanh_layers_are_one_warning(tmp_path):
    _, epoch = _run(deep_tanh("weights gaussian(std=1), bias constant(0)"), "big", tmp_path)
    (sat,) = [w for w in epoch["warnings"] if "saturated" in w]
    assert sat.startswith("10 of 10 tanh layers are >50% saturated (tanh1 .. tanh10")


def test_negative_bias_kills_relus(tmp_path):
    text = _mlp(("bias constant(0)", "bias constant(-10) before relu"))
    graph = check(load_text(text, "dead"))
    train(graph, tmp_path / "dead", quiet=True)
    recs = _records(tmp_path / "dead" / "metrics.jsonl")
    step = next(r for r in recs if r.get("monitor") == "step")
    assert step["activations"]["relu1"]["dead"] > 0.95
    epoch = next(r for r in recs if "train_loss" in r)
    assert epoch["activations"]["relu1"]["dead"] > 0.95
    assert any("relu1" in w and "dead ReLUs" in w for w in epoch["warnings"])


def test_dead_layer_gets_no_update_not_a_low_learning_rate(tmp_path):
    """Plain SGD without L2: a layer whose ReLUs are all dead gets no gradient, so its update is
    exactly 0. That is 'no update', not a ratio of 1e-30 blamed on the learning rate."""
    text = _mlp(("bias constant(0)", "bias constant(-10) before relu"), ("adam(lr=3e-3)", "sgd(lr=0.01)"),
                ("l2 1e-4", "l2 0"), ("schedule   cosine", "schedule   constant"))
    train(check(load_text(text, "dead_sgd")), tmp_path / "d", quiet=True)
    epoch = _epochs(tmp_path / "d" / "metrics.jsonl")[0]
    assert epoch["update_ratio"]["fc1.weight"] == 0.0 and epoch["zero_updates"]["fc1.weight"] >= 1
    assert "fc1.weight: no update (dead units or frozen?)" in epoch["warnings"]
    assert not any("fc1.weight" in w and "learning rate" in w for w in epoch["warnings"])


def test_annealed_schedule_is_not_a_low_learning_rate(tmp_path):
    """Cosine over 8 epochs: in the last one the lr is ~4% of its start and the ratios are tiny
    because of it; the record says so in `notes`, with no 'learning rate too low?' warning."""
    text = _mlp(("adam(lr=3e-3)", "sgd(lr=3e-3)"), ("l2 1e-4", "l2 0"), ("dropout 0.2", ""), epochs=8)
    text = text.replace("batch 32", "batch 256")
    graph = check(load_text(text, "cos", ("train.monitor_every=1",)))
    train(graph, tmp_path / "c", quiet=True, callbacks=[Monitor(graph, histograms=False, pictures=False)])
    first, last = _epochs(tmp_path / "c" / "metrics.jsonl")[0], _epochs(tmp_path / "c" / "metrics.jsonl")[-1]
    assert last["lr"] < 0.1 * first["lr"]
    assert last["update_ratio"]["fc1.weight"] < 1e-5 < first["update_ratio"]["fc1.weight"]
    assert not any("learning rate too low" in w for w in last.get("warnings", []))
    assert any("fc1.weight" in n and "the cosine schedule has annealed it" in n for n in last["notes"])


def test_lbfgs_steps_get_update_ratios_and_gradient_norms(tmp_path):
    """L-BFGS takes its step inside optimizer.step(closure), which train.py does not bracket
    with before_step: the monitor's optimizer hooks see it anyway."""
    text = _mlp(("adam(lr=3e-3)", "lbfgs(lr=1, max_iter=5)"), ("l2 1e-4", "l2 0"), ("schedule   cosine", ""),
                ("batch 32, ", ""), epochs=3)
    graph = check(load_text(text, "lbfgs", ("train.monitor_every=1",)))
    train(graph, tmp_path / "l", quiet=True, callbacks=[Monitor(graph, histograms=False, pictures=False)])
    recs = _records(tmp_path / "l" / "metrics.jsonl")
    steps = [r for r in recs if r.get("monitor") == "step"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    for s in steps:
        assert 0 < s["update_ratio"]["fc1.weight"] and 0 < s["grad_norm"]["fc1.weight"]
        assert set(s["activations"]) == {"fc1", "relu1", "fc2"}
    # a line-searched full step is far from the SGD heuristic ~1e-3, and that is no warning
    assert not any("update/weight" in w for r in recs if "train_loss" in r for w in r.get("warnings", []))


def test_healthy_relus_are_not_dead(tmp_path):
    train(check(load_text(_mlp(), "ok")), tmp_path / "ok", quiet=True)
    step = next(r for r in _records(tmp_path / "ok" / "metrics.jsonl") if r.get("monitor") == "step")
    assert step["activations"]["relu1"]["dead"] < 0.2


def test_huge_learning_rate_exits_3_and_keeps_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "boom"
    code = nnc_main(["train", str(SPECS / "digits_mlp.nnspec"), "--set", "optimizer.lr=1e4", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == EXIT_DIVERGED, err
    assert "diverged at epoch 1, step" in err and "learning rate" in err
    step = int(err.split("diverged at epoch 1, step ")[1].split(":")[0])
    assert step <= 5
    ck = checkpoint.load(out / "last.safetensors")
    assert ck.info["step"] == 0
    assert all(torch.isfinite(t).all() for t in ck.model.values())
    model = build_model(check(load_spec(str(SPECS / "digits_mlp.nnspec"), ())))
    model.load_state_dict(ck.model)


def test_train_writes_monitor_records_pictures_and_histograms(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "cnn"
    graph = check(load_spec(str(SPECS / "digits_cnn.nnspec"), ("train.epochs=1", "train.monitor_every=10")))
    train(graph, out, quiet=True)
    recs = _records(out / "metrics.jsonl")
    steps = [r for r in recs if r.get("monitor") == "step"]
    assert [s["step"] for s in steps] == [0, 10, 20, 30]  # 1258 training examples / batch 32 = 40 steps
    params = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    for s in steps:
        assert list(s["update_ratio"]) == params and list(s["grad_norm"]) == params
        assert set(s["activations"]) == {"conv1", "relu1", "conv2", "relu2", "fc1", "relu3", "fc2"}
        assert 1e-6 < s["update_ratio"]["fc1.weight"] < 1
    # the dashboard's per-layer histograms: once per epoch, the nonlinearities, ReLUs with their zeros
    (hist,) = [s["act_hist"] for s in steps if "act_hist" in s]
    assert set(hist) == {"relu1", "relu2", "relu3"}
    assert 0 < hist["relu1"]["zero"] < 1 and len(hist["relu1"]["counts"]) == 40
    epochs = [r for r in recs if "train_loss" in r]
    assert len(epochs) == 1
    for e in epochs:
        assert set(e["update_ratio"]) >= {"conv1.weight", "fc2.weight"}
        assert 0 <= e["activations"]["relu1"]["dead"] <= 1 and "gap" in e
    for png in ("dashboard.png", "filters.png", "loss.png"):
        assert (out / png).read_bytes()[:8] == PNG and (out / png).stat().st_size > 3_000, png
    (events,) = (out / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"histograms": 0})
    acc.Reload()
    tags = set(acc.Tags()["histograms"])
    for p in params:
        assert {f"weights/{p}", f"gradients/{p}"} <= tags, p
    assert "activations/relu1" in tags
    w = acc.Histograms("weights/fc1.weight")
    assert len(w) == 1 and w[0].step == 0 and w[0].histogram_value.num == HIST_SAMPLE  # of fc1's 128 x 512
    assert acc.Histograms("gradients/fc2.bias")[0].histogram_value.num == 10  # a small tensor: all of it
    assert [e.step for e in acc.Scalars("update_ratio/fc1.weight")] == [0, 10, 20, 30]
    # one event per sampled step holds all its values (an event per value cost ~10x more)
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    ours = [e for e in EventFileLoader(str(events)).Load() if any("/" in v.tag for v in e.summary.value)]
    assert len(ours) == len(steps)  # (train.py's epoch scalars, tags without '/', are its own)


def test_update_ratio_is_the_step_size_over_the_weights(tmp_path):
    """sgd, no momentum: the update is lr * grad, so ratio == lr * ||grad|| / ||w||."""
    text = _mlp(("adam(lr=3e-3)", "sgd(lr=0.01)"), ("l2 1e-4", "l2 0"), ("dropout 0.2", ""),
                ("schedule   cosine", "schedule   constant"))
    graph = check(load_text(text, "sgd"))
    train(graph, tmp_path / "sgd", quiet=True, callbacks=[Monitor(graph, histograms=False, pictures=False)])
    step = next(r for r in _records(tmp_path / "sgd" / "metrics.jsonl") if r.get("monitor") == "step")
    model = build_model(check(load_text(text, "sgd")))
    w = model.fc1.weight.detach().norm().item()
    assert step["update_ratio"]["fc1.weight"] == pytest.approx(0.01 * step["grad_norm"]["fc1.weight"] / w, rel=1e-4)


def _fake_run(graph, model, tmp_path, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    path = tmp_path / "metrics.jsonl"
    path.touch()
    lines = []
    log = SimpleNamespace(path=path, write=lambda r: lines.append(r), tb=None)
    return SimpleNamespace(model=model, optimizer=opt, out=tmp_path, log=log, epoch=0, step=0, loss=1.0, **kw), lines


def test_hooks_exist_only_during_the_first_training_forward_of_sampled_steps(tmp_path):
    graph = check(load_spec(str(SPECS / "digits_mlp.nnspec"), ("train.monitor_every=3",)))
    model = build_model(graph).train()
    mon = Monitor(graph, histograms=False, pictures=False)
    run, _ = _fake_run(graph, model, tmp_path)
    mon.start(run)
    captured = []
    x = torch.randn(8, 64)
    for _ in range(7):
        model(x).sum().backward()
        model(x)  # a second forward in the same step (a line search, a closure): not captured again
        with torch.no_grad():
            model(x)  # train.py judging the epoch's last update: no grad, never captured
        run.optimizer.step()
        captured.append(sorted(mon.acts))
        mon.acts = {}
        assert all(not m._forward_hooks for m in model.children())
    assert captured == [["fc1", "fc2", "relu1"], [], [], ["fc1", "fc2", "relu1"], [], [], ["fc1", "fc2", "relu1"]]
    model.eval()
    model(x), model(x), model(x)  # evaluation passes neither count nor capture
    assert mon.acts == {}
    mon.end(run)
    assert not model._forward_hooks and not model._forward_pre_hooks and not run.optimizer._optimizer_step_pre_hooks


@pytest.mark.parametrize("ema, hint", [("", True), ("train.ema=0.99", False)])
def test_a_train_val_gap_is_overfitting_unless_val_sees_the_ema_average(tmp_path, ema, hint):
    graph = check(load_spec(str(SPECS / "digits_mlp.nnspec"), (ema,) if ema else ()))
    mon = Monitor(graph, histograms=False, pictures=False)
    run, _ = _fake_run(graph, build_model(graph), tmp_path)
    mon.start(run)
    extra = mon.epoch_end(run, {"train_accuracy": 0.9, "val_accuracy": 0.5})
    mon.end(run)
    assert ("overfitting" in extra.get("gap_hint", "")) is hint


def test_end_copes_with_a_run_that_died_in_its_first_step(tmp_path):
    """train.py calls end() also when the run diverged or was interrupted: here in the middle of
    the first sampled forward pass (layer hooks still registered, nothing in metrics.jsonl)."""
    graph = check(load_spec(str(SPECS / "digits_cnn.nnspec"), ()))
    model = build_model(graph).train()
    mon = Monitor(graph)
    run, _ = _fake_run(graph, model, tmp_path)
    mon.start(run)
    mon._pre(model, (torch.randn(2, 1, 8, 8),))  # the forward pass that never finished
    assert any(m._forward_hooks for m in model.modules())
    mon.end(run)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # the pictures are drawn from the run directory, which holds no checkpoint yet: no filters
    assert [p.name for p in end_pictures(tmp_path, graph, [mon])] == ["dashboard.png"]
    assert (tmp_path / "dashboard.png").read_bytes()[:8] == PNG
    filters(model.conv1.weight.detach().numpy(), tmp_path / "filters.png")
    assert (tmp_path / "filters.png").read_bytes()[:8] == PNG


def test_dashboard_draws_partial_and_truncated_metrics(tmp_path):
    """Only step records (no epoch finished), a NaN loss and a line cut short by a crash."""
    rows = [{"monitor": "step", "epoch": 1, "step": s, "loss": v,
             "update_ratio": {"fc1.weight": 1e-3, "fc1.bias": None, "fc2.weight": 0.0},
             "activations": {"tanh1": {"mean": 0.0, "std": 0.2, "saturated": 0.0},
                             "tanh2": {"mean": 0.0, "std": 0.0, "saturated": 0.0}},
             **({"act_hist": {"tanh1": {"lo": -1, "hi": 1, "counts": [0] * 19 + [5, 5] + [0] * 19}}} if s == 0 else {})}
            for s, v in ((0, 2.3), (1, float("nan")))]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"monitor": "st')
    dashboard(path, tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG
    (tmp_path / "empty.jsonl").write_text("")
    dashboard(tmp_path / "empty.jsonl", tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:8] == PNG
