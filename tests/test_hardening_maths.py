"""Wrong results found while checking the notes' maths: what each should have been, checked
against an independent computation."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from export_cases import nnc_main

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec, load_text
from nnc.runtime import checkpoint
from nnc.runtime.data import load_splits
from nnc.runtime.train import train


def write(tmp_path, text, name="s.nnspec"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_synthetic_data_for_tokens_is_token_ids(tmp_path):
    graph = check(load_text("model M {\n input tokens(6, 50)\n embedding 8\n lstm 8\n dense 3\n}\n"
                            "data synthetic(n=40), val 0.2, test 0.2\ntrain batch 8, epochs 1\n"))
    x = load_splits(graph).train.x
    assert x.dtype == np.int64 and x.min() >= 0 and x.max() < 50 and len(np.unique(x)) > 10
    final = train(graph, tmp_path / "run", device="cpu", quiet=True, callbacks=[])
    assert np.isfinite(final["test_loss"])


def test_infer_prints_what_a_regression_model_predicts(tmp_path):
    """Values, not class indices and softmax 'probabilities'."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.stack([x.sum(1), x[:, 0] * 3], 1).astype(np.float32))
    spec = write(tmp_path, 'model R {\n input vector(3)\n dense 2\n}\nloss mse\ndata npz("d.npz"), val 0.2\n'
                           "train batch 8, epochs 2\n")
    assert nnc_main("train", spec, "--out", tmp_path / "run", "-q").returncode == 0
    assert nnc_main("export", tmp_path / "run" / "best.safetensors", "-o", tmp_path / "r.onnx").returncode == 0
    np.save(tmp_path / "x.npy", x[:2])
    want = ort.InferenceSession(str(tmp_path / "r.onnx")).run(None, {"input": x[:2]})[0]
    r = nnc_main("infer", tmp_path / "r.onnx", tmp_path / "x.npy")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    for i, line in enumerate(lines):
        name, values = line.split(": ")
        assert name == f"{tmp_path / 'x.npy'}[{i}]"
        np.testing.assert_allclose([float(v) for v in values.split(", ")], want[i], rtol=1e-5)
    r = nnc_main("infer", tmp_path / "r.onnx", tmp_path / "x.npy", "--json")
    got = json.loads(r.stdout)["predictions"]
    np.testing.assert_allclose([p["values"] for p in got], want, rtol=1e-6)


def test_bce_runs_report_the_accuracy_of_each_outputs_sign(tmp_path):
    """Multi-label targets: train, val and test accuracy are the fraction of outputs whose logit's
    sign matches the target, recomputed here from the best checkpoint."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0], 1).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = write(tmp_path, 'model B {\n input vector(4)\n dense 16\n relu\n dense 2\n}\nloss bce\n'
                           'optimizer adam(lr=1e-2)\ndata npz("d.npz"), val 0.2, test 0.2\n'
                           "train batch 16, epochs 4, early_stop(patience=3, metric=val_accuracy)\n")
    graph = check(load_spec(str(spec)))
    final = train(graph, tmp_path / "run", device="cpu", quiet=True, callbacks=[])
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "train_loss" in l]
    assert all(0 <= r["train_accuracy"] <= 1 and 0 <= r["val_accuracy"] <= 1 for r in rows)
    best = checkpoint.load(final["best_checkpoint"])
    from nnc.compiler.torch_module import build_model
    from nnc.runtime import preprocess

    model = build_model(graph).eval()
    model.load_state_dict(best.model)
    test = load_splits(graph).test
    with torch.no_grad():
        scores = model(torch.as_tensor(preprocess.apply(best.preprocess, test.x) if best.preprocess else test.x))
    want = float(((scores.numpy() > 0) == (test.y > 0.5)).mean())
    assert final["test_accuracy"] == pytest.approx(want, abs=1e-6) and want > 0.75
    r = nnc_main("eval", final["best_checkpoint"], "--json")
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(want, abs=1e-6)


def _diagnostics(text, *overrides):
    """(errors, warnings) of nnc check, as message strings."""
    from nnc.diagnostics import NncError

    try:
        graph = check(load_text(text, "s.nnspec", overrides))
    except NncError as e:
        return [d.message for d in e.diagnostics], []
    return [], [d.message for d in graph.warnings]


DIGITS = "model M {\n input vector(64)\n dense fc1 32\n relu\n dense fc2 10\n}\ndata digits\n"


def test_check_finds_what_training_would_trip_on(tmp_path):
    """A regression loss on class labels; constant (symmetric) hidden weights; L-BFGS with noise."""
    errors, _ = _diagnostics(DIGITS, "loss=mse")
    assert errors == [("digits holds class labels (one integer in 0..9 per example), but mse is a regression loss "
                       "and the model ends in 10 outputs")]
    assert "bce needs targets in [0, 1]" in _diagnostics(DIGITS, "loss=bce")[0][0]
    assert _diagnostics(DIGITS.replace("fc2 10", "fc2 1"), "loss=mse") == ([], [])  # one output: a regression on labels
    _, warnings = _diagnostics(DIGITS, "init.weights=constant(0)")
    assert warnings == [("constant weights give every unit of fc1 the same weights: they compute the same output and get "
                         "the same gradient, so they never differ (the symmetry the notes warn about)")]
    assert _diagnostics(DIGITS + "init fc2 weights constant(0)\n") == ([], [])  # the last layer may start at 0
    noisy = DIGITS.replace("relu\n", "relu\n batchnorm\n dropout 0.5\n dropout 0\n")
    _, warnings = _diagnostics(noisy, "optimizer=lbfgs")
    assert [w.split(" but ")[1].split(" ")[:2] for w in warnings] == [["batchnorm", "bn1"], ["dropout", "drop1"]]
    assert _diagnostics(noisy)[1] == []
    image = "model M {\n input image(1, 8, 8)\n dense 10\n}\ndata digits, augment flip\noptimizer lbfgs\n"
    assert "augmentation draws new examples at every step" in _diagnostics(image)[1][0]


def test_the_doctor_overfits_with_the_specs_optimizer():
    """The spec's own optimizer, at its own rate; Adam at 1e-3 only when that cannot, with a note."""
    from nnc.runtime.doctor import run_doctor

    [c] = run_doctor(check(load_text(DIGITS + "optimizer lbfgs(lr=1)\n")), checks=("overfit",))
    assert c.passed is True and c.details["optimizer"] == "lbfgs lr 1" and "(lbfgs lr 1)" in c.summary
    [c] = run_doctor(check(load_text(DIGITS + "optimizer sgd(lr=1e-6)\n")), checks=("overfit",))
    assert c.passed is True and c.details["optimizer"] == "adam lr 0.001"
    assert "the spec's sgd lr 1e-06 did not get there" in c.summary and "adam lr 0.001 did" in c.summary


BN = ("model B {\n input vector(64)\n dense 64\n batchnorm\n relu\n dense 64\n batchnorm\n relu\n dense 10\n}\n"
      "optimizer sgd(lr=0.05, momentum=0.9)\ndata digits, val 0.15, test 0.15\ntrain batch 16, epochs 3, monitor_every 0")


def test_ema_with_batchnorm_measures_the_statistics_of_the_averaged_weights(tmp_path):
    """The averaged weights come with batchnorm statistics measured for them (the raw weights'
    do not fit them), as torch's own swa_utils.update_bn computes them; the averaged model
    reaches the plain run's accuracy."""
    plain = train(check(load_text(BN + "\n")), tmp_path / "plain", device="cpu", quiet=True, callbacks=[])
    graph = check(load_text(BN + ", ema 0.99\n"))
    final = train(graph, tmp_path / "ema", device="cpu", quiet=True, callbacks=[])
    assert final["test_accuracy"] >= plain["test_accuracy"] - 0.005, (final["test_accuracy"], plain["test_accuracy"])
    from nnc.compiler.torch_module import build_model
    from nnc.runtime.data import tensors

    last = checkpoint.load(tmp_path / "ema" / "last.safetensors")
    model = build_model(graph)
    model.load_state_dict(last.model)
    x, _ = tensors(load_splits(graph).train, last.preprocess, "cpu")
    torch.optim.swa_utils.update_bn([x[i:i + 16] for i in range(0, len(x), 16) if len(x[i:i + 16]) > 1], model)
    for name, t in model.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(last.model[name], t, rtol=1e-4, atol=1e-5)
