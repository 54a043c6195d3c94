"""nnc doctor: the notes' sanity checks, the gradient check on hand-made layers and on a bias
before batchnorm, the loss at init per loss, the lr sweep on small splits, time budgets and
the CLI (streaming, --checks, strict JSON)."""

import json
import math
import re

import pytest
import torch
from conftest import SPECS

from nnc.cli import main as nnc_main
from nnc.compiler.checks import check
from nnc.compiler.load import load_spec, load_text
from nnc.diagnostics import EXIT_SANITY
from nnc.runtime.doctor import Check, Doctor, gradient_check, label_free_losses, run_doctor, svm_expected, verdict


@pytest.fixture(autouse=True)
def one_thread():
    """pytest -n 2 on two cores: one intra-op thread per worker (see tests/test_monitors.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _strict(text: str):
    """json.loads that refuses NaN / Infinity (Python's json accepts them; JSON does not)."""
    def bad(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=bad)


def doctor(capsys, *args) -> tuple[int, str, str]:
    code = nnc_main(["doctor", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _graph(text: str, name: str = "spec", overrides=()):
    return check(load_text(text, name, tuple(overrides)))


def test_doctor_digits_cnn_passes_and_prints_numbers(capsys):
    code, out, err = doctor(capsys, SPECS / "digits_cnn.nnspec")
    assert code == 0, out + err
    for words in ("loss at init", "vs chance 2.3026", "overfits 20 examples", "training accuracy 100%",
                  "gradient check", "conv1.weight", "lr sweep", "loss goes down for lr", "5 of 5 checks passed"):
        assert words in out, words
    # one line per check, in order, before the detail tables
    starts = [out.index(f"pass  {name}") for name in ("loss at init", "regularization", "overfits", "gradient check",
                                                       "lr sweep")]
    assert starts == sorted(starts) and starts[-1] < out.index("worst relative error per")
    assert "      expected: these scores with random labels: " in out  # the basis of the loss at init


def test_doctor_json(capsys):
    code, stdout, err = doctor(capsys, SPECS / "digits_mlp.nnspec", "--json")
    assert code == 0, err
    out = _strict(stdout)
    assert out["passed"] is True
    checks = {c["name"]: c for c in out["checks"]}
    assert len(checks) == 5 and all(c["status"] == "pass" for c in checks.values())
    init = checks["loss at init ≈ chance"]["details"]
    assert init["chance"] == pytest.approx(2.302585, abs=1e-5)
    assert init["expected_low"] <= init["loss"] <= init["expected_high"] and init["score_std"] <= 2
    grads = checks["gradient check"]["details"]["tensors"]
    assert [g["name"] for g in grads] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert all(g["worst"] < 1e-4 and g["entries"] == 10 for g in grads)
    sweep = next(c for n, c in checks.items() if n.startswith("lr sweep"))["details"]
    lo, hi = sweep["good_range"]
    assert lo < 3e-3 < hi  # the spec's adam lr is inside the range that works
    assert any(r["exploded"] for r in sweep["rows"] if r["lr"] >= 1.0)  # adam at lr 1+ blows up


def test_init_check_fails_on_huge_init(tmp_path):
    """Scores blown up by the init: the loss at init is far from ln 10 and the check says so."""
    text = (SPECS / "digits_mlp.nnspec").read_text().replace("init       weights he, bias constant(0)",
                                                             "init       weights gaussian(std=5), bias constant(0)")
    path = tmp_path / "huge.nnspec"
    path.write_text(text)
    [c] = run_doctor(check(load_spec(str(path), ())), checks=("init_loss",))
    assert not c.passed
    assert c.details["loss"] > 10 * c.details["chance"]
    assert "scores too large at init" in c.summary


def test_doctor_exit_4_when_a_check_fails(capsys):
    code, out, err = doctor(capsys, SPECS / "digits_mlp.nnspec", "--set", "init.weights=gaussian(std=5)",
                            "--checks", "init", "--json")
    assert code == EXIT_SANITY, err
    res = _strict(out)
    assert res["passed"] is False
    assert [c["status"] for c in res["checks"]] == ["fail"]


# ---------------------------------------------------------------- 1. lr sweep on a small split


def test_lr_sweep_wraps_around_a_split_smaller_than_the_sweep():
    """two_layer.nnspec trains on 359 examples, fewer than the sweep's 512: the batches wrap
    around the split instead of running off its end (empty batches: NaN at every lr)."""
    [sweep] = run_doctor(check(load_spec(str(SPECS / "two_layer.nnspec"), ())), checks=("lr_sweep",))
    rows = sweep.details["rows"]
    assert len(rows) == 9 and all(math.isfinite(r["end"]) for r in rows)
    assert sweep.details["examples"] == 359
    assert any(r["status"] == "down" for r in rows)
    assert sweep.passed, sweep.summary


def test_json_writes_nan_and_infinity_as_null(capsys, monkeypatch):
    """A check that measured NaN (a loss that blew up) still gives valid JSON."""
    import nnc.runtime.doctor as D

    fake = Check("lr sweep (sgd, 100 steps)", False, "the loss went down for none",
                 {"rows": [{"lr": 1.0, "first": 2.3, "end": float("nan"), "exploded": True, "down": False,
                            "status": "exploded"}], "worst": float("inf")})
    monkeypatch.setattr(D, "run_doctor", lambda *a, **k: [fake])
    code, out, _ = doctor(capsys, SPECS / "digits_mlp.nnspec", "--json")
    res = _strict(out)
    assert code == EXIT_SANITY
    assert res["checks"][0]["details"]["rows"][0]["end"] is None and res["checks"][0]["details"]["worst"] is None
    assert res["checks"][0]["details"]["rows"][0]["status"] == "exploded"
    code, out, _ = doctor(capsys, SPECS / "digits_mlp.nnspec")
    assert "1e+00:xnan" in out


# ---------------------------------------------------------------- 2. gradient check


BN = """nnspec 1
model BN {{
    input image(1, 8, 8)
{body}
    dense out 10
}}
init       weights he, bias constant(0.1)
loss       cross_entropy
optimizer  adam(lr=1e-3)
data       digits, val 0.1, test 0.2, preprocess channel_mean normalize
"""


@pytest.mark.parametrize("body,biased", [
    ("    conv conv1 8 kernel 3 pad 1\n    batchnorm\n    relu", "conv1.bias"),
    ("    dense fc1 16\n    batchnorm\n    relu", "fc1.bias"),
])
def test_a_bias_right_before_batchnorm_has_gradient_zero_and_passes(body, biased):
    """Batchnorm subtracts the batch mean, so the bias before it has true gradient 0: autograd
    gives ~1e-17, centered differences rounding noise. Both below the noise floor: agreeing."""
    graph = _graph(BN.format(body=body), "bn")
    c = Doctor(graph).gradients()
    assert c.passed, c.summary
    tensors = {t["name"]: t for t in c.details["tensors"]}
    assert tensors[biased]["verdict"] == "zero" and tensors[biased]["below_floor"] == tensors[biased]["entries"]
    assert f"every checked entry of {biased} (a bias right before batchnorm?)" in c.summary
    assert all(t["verdict"] in ("happy", "ok") for n, t in tensors.items() if n != biased)


# ---------------------------------------------------------------- 3. loss at init


def test_svm_loss_at_init_is_judged_by_the_hinge_not_by_nats():
    """He init, digits MLP: scores of std ~1.3 open the hinges to 13.0 against chance 9 ((C-1)
    margin), 44% off. That is what such scores give: it passes, like cross-entropy's 2.9 vs 2.3
    (the tolerance was 35% for every loss, tuned in nats for softmax)."""
    graph = check(load_spec(str(SPECS / "digits_mlp.nnspec"), ("loss=svm", "train.seed=4")))
    [c] = run_doctor(graph, checks=("init_loss",))
    assert c.passed, c.summary
    d = c.details
    assert d["chance"] == 9.0 and d["loss"] > 1.2 * d["chance"] and d["score_std"] < 2
    assert "(C-1)·E[max(0, d+1)], d ~ N(0, 2·" in d["basis"] and "random labels" in d["basis"]


def test_svm_closed_form_matches_random_scores():
    g = torch.Generator().manual_seed(0)
    for std in (0.0, 0.5, 1.4, 3.0):
        scores = std * torch.randn(4000, 10, generator=g)
        assert label_free_losses("svm", 1.0, scores)[0].mean().item() == pytest.approx(svm_expected(10, std), rel=0.02)
    scores = 0.1 * torch.randn(4000, 10, generator=g)
    assert label_free_losses("cross_entropy", 1.0, scores)[0].mean().item() == pytest.approx(math.log(10) + 0.1 ** 2 / 2,
                                                                                         abs=2e-3)


def test_random_labels_fit_a_seed_whose_scores_line_up_with_the_classes():
    """digits_mlp, seed 6: the random net's scores happen to favour the right digits a little
    (loss 9.5 against 11.8 for random labels, 6 standard errors); that is no failure."""
    for loss in ("svm", "cross_entropy"):
        [c] = run_doctor(check(load_spec(str(SPECS / "digits_mlp.nnspec"), (f"loss={loss}", "train.seed=6"))),
                         checks=("init_loss",))
        assert c.passed, c.summary
        assert c.details["loss"] < c.details["expected"]


def test_lenet5_with_he_everywhere_has_scores_too_large_at_init():
    """LeNet-5 with He init in every layer (the output layer too) and two max pools, on
    white-noise inputs: scores of std ~4 at init. The loss (4.8) is what such scores give; the
    finding is the init scale, and the check says so."""
    text = re.sub(r"(?m)^init .*$", "init       weights he, bias constant(0)", (SPECS / "lenet5.nnspec").read_text())
    [c] = run_doctor(_graph(text, "lenet5_he"), checks=("init_loss",))
    assert c.passed is False
    assert "scores too large at init, std" in c.summary and "the init scale is the cause" in c.summary
    assert c.details["score_std"] > 3 and c.details["expected_low"] <= c.details["loss"] <= c.details["expected_high"]


def test_a_summed_loss_is_not_what_random_scores_give():
    doc = Doctor(check(load_spec(str(SPECS / "digits_mlp.nnspec"), ())))
    doc.loss_fn = lambda s, y: torch.nn.functional.cross_entropy(s, y, reduction="sum")
    c = doc.init_loss()
    assert c.passed is False and "summed instead of averaged" in c.summary


# ---------------------------------------------------------------- 8. CLI: streaming, --checks, budgets


def test_checks_selects_a_subset_in_order(capsys):
    code, out, err = doctor(capsys, SPECS / "digits_mlp.nnspec", "--checks", "grad,init")
    assert code == 0, err
    assert out.index("pass  gradient check") < out.index("pass  loss at init")
    assert "overfits" not in out and "lr sweep" not in out and "2 of 2 checks passed" in out


def test_checks_rejects_an_unknown_name(capsys):
    with pytest.raises(SystemExit) as e:
        nnc_main(["doctor", str(SPECS / "digits_mlp.nnspec"), "--checks", "init,gard"])
    assert e.value.code == 2
    assert "unknown check 'gard' (did you mean 'grad'?)" in capsys.readouterr().err


def test_on_check_is_called_as_each_check_completes():
    seen = []
    graph = check(load_spec(str(SPECS / "digits_mlp.nnspec"), ()))
    res = run_doctor(graph, checks=("regularization", "init_loss"), on_check=lambda c: seen.append((c.name, len(seen))))
    assert [name for name, _ in seen] == [c.name for c in res] == ["regularization raises the loss", "loss at init ≈ chance"]
    assert all(c.seconds > 0 for c in res)


def test_a_big_model_is_time_boxed_and_says_so():
    """Pretend every example-step costs 1 s: the overfit and the sweep are skipped, not failed;
    the gradient check keeps within its budget on fewer entries and tensors."""
    graph = check(load_spec(str(SPECS / "digits_cnn.nnspec"), ()))
    doc = Doctor(graph, budget=1e-4)
    doc._cost = (0.0, 1.0)
    over, sweep = doc.overfit(), doc.lr_sweep()
    assert over.passed is None and over.summary.startswith("skipped: ~600 s for 30 steps of 20 examples")
    assert sweep.passed is None and "skipped: even 5 lrs x 20 steps of batch 8" in sweep.summary
    grads = doc.gradients()
    assert grads.passed and len(grads.details["tensors"]) == 2  # the first and the last
    assert all(t["entries"] == 1 for t in grads.details["tensors"]) and "time-boxed" in grads.summary


def test_sweep_plan_shrinks_batch_then_steps_then_lrs():
    graph = check(load_spec(str(SPECS / "digits_cnn.nnspec"), ()))
    doc = Doctor(graph, budget=60)
    doc._cost = (0.0, 0.01)  # 9 lrs x 100 steps x 128 examples: ~1150 s
    lrs, steps, batch, note = doc.sweep_plan(tuple(range(9)), 100, 128, full_batch=False)
    assert (len(lrs), steps, batch) == (9, 83, 8)
    assert note == "time-boxed: 9 lrs x 83 steps of batch 8 (~60 s); the full sweep, 9 x 100 of 128, ~1152 s"
    doc._cost = (0.0, 1e-6)
    assert doc.sweep_plan(tuple(range(9)), 100, 128, full_batch=False) == (tuple(range(9)), 100, 128, "")


def test_a_time_boxed_sweep_that_finds_nothing_is_inconclusive():
    """20 steps of batch 8 where the spec asks 100 of 32: no lr bringing the loss down in so
    few steps says nothing against the lrs (AlexNet on a CPU failed its sweep this way)."""
    graph = check(load_spec(str(SPECS / "digits_mlp.nnspec"), ("optimizer=sgd(lr=0.01)",)))
    doc = Doctor(graph, budget=4.0)
    doc._cost = (0.0, 0.01)  # 9 x 100 x 32 examples: ~290 s; the plan: 5 lrs x 20 steps of 8, ~8 s
    c = doc.lr_sweep(lrs=tuple(10.0 ** -k for k in range(12, 3, -1)))  # 1e-12 .. 1e-4: too small to show
    assert c.details["steps"] == 20 and c.details["batch"] == 8 and len(c.details["rows"]) == 5
    assert c.passed is None and c.summary.endswith("(inconclusive)") and "the full sweep, 9 x 100 of 32" in c.summary


def test_skipped_checks_do_not_fail_the_run(capsys, monkeypatch):
    import nnc.runtime.doctor as D

    monkeypatch.setattr(D, "run_doctor", lambda *a, on_check=None, **k: [
        on_check(c) or c for c in (Check("loss at init ≈ chance", True, "fine"), Check("overfits 20 examples", None, "skipped: ~600 s"))])
    code, out, _ = doctor(capsys, SPECS / "digits_mlp.nnspec", "--checks", "init,overfit")
    assert code == 0
    assert "skip  overfits 20 examples" in out and "1 of 2 checks passed, 1 skipped or inconclusive" in out


# ---------------------------------------------------------------- gradient check


class GoodReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0).to(g.dtype)


class BadReLU(GoodReLU):
    @staticmethod
    def backward(ctx, g):  # twice the true gradient
        (x,) = ctx.saved_tensors
        return 2 * g * (x > 0).to(g.dtype)


class Net(torch.nn.Module):
    def __init__(self, relu):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.relu = torch.nn.Linear(6, 20), torch.nn.Linear(20, 3), relu

    def forward(self, x):
        return self.fc2(self.relu.apply(self.fc1(x)))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 6, generator=g), torch.tensor([0, 1, 2, 1])


def test_gradient_check_passes_a_correct_layer():
    x, y = _data()
    res = gradient_check(Net(GoodReLU), torch.nn.functional.cross_entropy, x, y)
    assert [r.name for r in res] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [r.entries for r in res] == [10, 10, 10, 3]  # a sample of 10 for large tensors, all of a small one
    assert max(r.worst for r in res) < 1e-7
    assert all(r.verdict == "happy" for r in res)


def test_gradient_check_flags_a_wrong_backward():
    x, y = _data()
    res = {r.name: r for r in gradient_check(Net(BadReLU), torch.nn.functional.cross_entropy, x, y)}
    # below the bad ReLU, every gradient is doubled: |2n - n| / (2n + n) = 1/3 (or 0 where both are 0)
    for name in ("fc1.weight", "fc1.bias"):
        assert res[name].verdict == "wrong"
        assert res[name].worst == pytest.approx(1 / 3, rel=1e-4)
    for name in ("fc2.weight", "fc2.bias"):  # above it, autograd is right
        assert res[name].worst < 1e-7


def test_gradient_check_leaves_the_model_alone():
    model = Net(GoodReLU)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data()
    gradient_check(model, torch.nn.functional.cross_entropy, x, y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.fc1.weight.dtype == torch.float32 and model.fc1.weight.grad is None


def test_verdict_thresholds():
    assert [verdict(v) for v in (0.5, 1e-3, 1e-5, 1e-9, 0.0)] == ["wrong", "uncomfortable", "ok", "happy", "happy"]


def _mlp(*overrides):
    return check(load_spec(str(SPECS / "digits_mlp.nnspec"), overrides))


def test_nan_gradients_are_wrong_not_happy():
    """Weights of std 1e200 overflow: the loss and every gradient are NaN (max(0, nan) once kept
    the 0 and passed every tensor as happy)."""
    [c] = run_doctor(_mlp("init.weights=gaussian(std=1e200)"), checks=("gradients",))
    assert c.passed is False and all(t["verdict"] == "wrong" for t in c.details["tensors"])


def test_a_softmax_before_cross_entropy_does_not_overfit(tmp_path, capsys):
    """It gets all 20 examples right while its loss stalls at 1.46: once a pass. The doctor
    also shows the spec's own warning, as check and train do."""
    text = (SPECS / "digits_mlp.nnspec").read_text().replace("dense fc2 10\n", "dense fc2 10\n    softmax\n")
    [c] = run_doctor(_graph(text, "softmax_end"), checks=("overfit",))
    assert c.passed is False and c.details["accuracy"] == 1.0 and c.details["loss"] > 1.4
    assert "every example is right but the loss stalls" in c.summary
    (tmp_path / "s.nnspec").write_text(text)
    code, out, err = doctor(capsys, tmp_path / "s.nnspec", "--checks", "init")
    assert code == 0 and "squashes them twice" in err


def test_an_lr_where_the_sweep_explodes_fails():
    [c] = run_doctor(_mlp("optimizer.lr=10"), checks=("lr_sweep",))
    assert c.passed is False and "the loss exploded from lr" in c.summary and "the spec's lr is 10: lower it" in c.summary
    assert any(r["exploded"] and r["lr"] <= 10 for r in c.details["rows"])


def test_regularization_check_skips_a_spec_that_decays_nothing():
    [c] = run_doctor(_mlp("optimizer=adam(lr=3e-3), decay_mult(fc1=0, fc2=0)"), checks=("regularization",))
    assert c.passed is None and "no weight is decayed" in c.summary


def test_a_checks_numbers_do_not_depend_on_the_checks_before_it():
    graph = _mlp()
    alone = run_doctor(graph, checks=("init_loss",))[0].details["loss"]
    after = run_doctor(graph, checks=("regularization", "gradients", "init_loss"))[-1].details["loss"]
    assert alone == after


@pytest.mark.parametrize("budget", ["nan", "-5"])
def test_budget_must_be_seconds(capsys, budget):
    with pytest.raises(SystemExit) as e:
        nnc_main(["doctor", str(SPECS / "digits_mlp.nnspec"), "--budget", budget])
    assert e.value.code == 2 and "expected seconds >= 0" in capsys.readouterr().err
