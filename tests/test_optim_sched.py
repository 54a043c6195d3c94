"""Optimizers against the notes' update formulas, schedules against their closed forms."""

import math

import numpy as np
import pytest
import torch

from nnc.compiler.load import load_text
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.schedules import SCHEDULES, OnPlateau, Plateau, Warmup, lr_at

RNG = np.random.default_rng(0)
A = RNG.standard_normal((6, 4))
B = RNG.standard_normal(6)
X0 = RNG.standard_normal(4)


def grad(x):  # f(x) = 0.5 ||Ax - b||^2
    return A.T @ (A @ x - B)


def notes_updates(kind, p, steps):
    """The update rules as the notes write them, in numpy."""
    x, v, cache, m, t = X0.copy(), np.zeros(4), np.zeros(4), np.zeros(4), 0
    for _ in range(steps):
        dx = grad(x)
        if kind == "sgd":
            x += -p["lr"] * dx
        elif kind == "momentum":
            v = p["mu"] * v - p["lr"] * dx
            x += v
        elif kind == "nesterov":
            v_prev = v.copy()
            v = p["mu"] * v - p["lr"] * dx
            x += -p["mu"] * v_prev + (1 + p["mu"]) * v
        elif kind == "adagrad":
            cache += dx ** 2
            x += -p["lr"] * dx / (np.sqrt(cache) + 1e-8)
        elif kind == "rmsprop":
            cache = p["decay"] * cache + (1 - p["decay"]) * dx ** 2
            x += -p["lr"] * dx / (np.sqrt(cache) + 1e-8)
        elif kind in ("adam", "adamw"):
            t += 1
            if kind == "adamw":
                x *= 1 - p["lr"] * p["weight_decay"]
            m = 0.9 * m + 0.1 * dx
            cache = 0.999 * cache + 0.001 * dx ** 2
            x += -p["lr"] * (m / (1 - 0.9 ** t)) / (np.sqrt(cache / (1 - 0.999 ** t)) + 1e-8)
    return x


CASES = {
    "sgd": {"lr": 0.05},
    "momentum": {"lr": 0.05, "mu": 0.9},
    "nesterov": {"lr": 0.05, "mu": 0.9},
    "adagrad": {"lr": 0.1},
    "rmsprop": {"lr": 0.01, "decay": 0.9},
    "adam": {"lr": 0.01},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_optimizer_matches_notes(kind):
    d = OPTIMIZERS[kind]
    x = torch.tensor(X0, requires_grad=True)
    opt = d.build(d.params(**CASES[kind]), [{"params": [x], "lr_mult": 1.0}])
    At, Bt = torch.tensor(A), torch.tensor(B)
    for _ in range(10):
        opt.zero_grad()
        (0.5 * ((At @ x - Bt) ** 2).sum()).backward()
        opt.step()
    np.testing.assert_allclose(x.detach().numpy(), notes_updates(kind, CASES[kind], 10), rtol=1e-6, atol=1e-9)


def test_sgd_momentum_word_equals_momentum_optimizer():
    a = notes_updates("momentum", {"lr": 0.05, "mu": 0.9}, 5)
    x = torch.tensor(X0, requires_grad=True)
    opt = OPTIMIZERS["sgd"].build(OPTIMIZERS["sgd"].params(lr=0.05, momentum=0.9), [{"params": [x]}])
    for _ in range(5):
        opt.zero_grad()
        (0.5 * ((torch.tensor(A) @ x - torch.tensor(B)) ** 2).sum()).backward()
        opt.step()
    np.testing.assert_allclose(x.detach().numpy(), a, rtol=1e-9)


def test_lbfgs_reaches_the_least_squares_minimum():
    x = torch.tensor(X0, requires_grad=True)
    opt = OPTIMIZERS["lbfgs"].build(OPTIMIZERS["lbfgs"].params(), [{"params": [x]}])
    At, Bt = torch.tensor(A), torch.tensor(B)

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((At @ x - Bt) ** 2).sum()
        loss.backward()
        return loss
    for _ in range(5):
        opt.step(closure)
    np.testing.assert_allclose(x.detach().numpy(), np.linalg.lstsq(A, B, rcond=None)[0], atol=1e-4)


def test_every_optimizer_word_is_tested():
    assert set(CASES) | {"lbfgs"} == set(OPTIMIZERS)


# ---------------------------------------------------------------- schedules


def sched(kind, **kw):
    return SCHEDULES[kind].params(**kw)


def test_step_decay_in_epochs():
    p = sched("step", every=5, factor=0.5)
    # 10 steps per epoch: epochs 0-4 at lr0, 5-9 at lr0/2, 10 at lr0/4
    assert lr_at(0, 0.1, "step", p, None, 10, 200) == pytest.approx(0.1)
    assert lr_at(49, 0.1, "step", p, None, 10, 200) == pytest.approx(0.1)
    assert lr_at(50, 0.1, "step", p, None, 10, 200) == pytest.approx(0.05)
    assert lr_at(100, 0.1, "step", p, None, 10, 200) == pytest.approx(0.025)


def test_exponential_and_inverse_time_follow_the_notes():
    for t in (0, 3, 17):
        assert lr_at(t, 0.2, "exponential", sched("exponential", k=0.1, unit="steps"), None, 1, 100) == \
            pytest.approx(0.2 * math.exp(-0.1 * t))
        assert lr_at(t, 0.2, "inverse_time", sched("inverse_time", k=0.5, unit="steps"), None, 1, 100) == \
            pytest.approx(0.2 / (1 + 0.5 * t))


def test_multistep():
    p = sched("multistep", at=(2, 4), factor=0.1)
    got = [lr_at(e * 10, 1.0, "multistep", p, None, 10, 60) for e in range(6)]
    assert got == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_endpoints_and_warmup():
    p = sched("cosine", min_lr=0.001)
    w = Warmup(steps=10)
    assert lr_at(0, 0.1, "cosine", p, w, 10, 110) == pytest.approx(0.01)  # step 0 of warm-up: lr0 / 10
    assert lr_at(9, 0.1, "cosine", p, w, 10, 110) == pytest.approx(0.1)   # end of warm-up
    assert lr_at(10, 0.1, "cosine", p, w, 10, 110) == pytest.approx(0.1)  # cosine starts at lr0
    assert lr_at(60, 0.1, "cosine", p, w, 10, 110) == pytest.approx(0.001 + 0.099 * 0.5)
    assert lr_at(110, 0.1, "cosine", p, w, 10, 110) == pytest.approx(0.001)  # the last step


def test_constant():
    assert lr_at(999, 0.3, "constant", sched("constant"), None, 10, 1000) == 0.3


def test_on_plateau_reduces_after_patience():
    """patience N: the rate is cut at the end of the N-th epoch in a row without improvement, the
    epoch at which early_stop(patience=N) would stop."""
    pl = Plateau(OnPlateau(metric="val_loss", factor=0.5, patience=1), 0.1)
    scales = [pl.update(v) for v in (1.0, 0.9, 0.95, 0.95, 0.89, 0.95)]
    # better, better, bad 1 -> cut, bad 1 -> cut, better, bad 1 -> cut
    assert scales == [1, 1, 0.5, 0.25, 0.25, 0.125]
    pl = Plateau(OnPlateau(metric="val_accuracy", factor=0.1, patience=3), 0.1)
    assert [pl.update(v) for v in (0.5, 0.5, 0.4, 0.5, 0.6)] == [1, 1, 1, 0.1, 0.1]
    with pytest.raises(ValueError):
        OnPlateau(patience=0)


def test_schedule_section_parses_warmup_plus_main():
    spec = load_text("model m {\n input vector(4)\n dense 2\n}\nschedule warmup(epochs=2), step(every=3)\n")
    assert spec.schedule.warmup.epochs == 2 and spec.schedule.main.kind == "step"


def test_momentum_is_the_notes_form_when_the_rate_changes():
    """`momentum` and `nesterov` keep the notes' velocity (parameter units): v = mu·v − lr·dx. torch's
    SGD, which `sgd(momentum=...)` is, keeps b = mu·b + dx and steps −lr·b. Equal at a constant
    rate; after a drop the notes' velocity still carries the steps taken at the old rate."""
    lrs = (0.1, 0.1, 0.01, 0.01)  # a step schedule's drop after two steps
    mu = 0.9

    def run(kind, p, wd=0.0):
        x = torch.tensor(X0, requires_grad=True)
        opt = OPTIMIZERS[kind].build(OPTIMIZERS[kind].params(**p), [{"params": [x], "lr_mult": 1.0, "weight_decay": wd}])
        for lr in lrs:
            for g in opt.param_groups:  # as runtime/train.set_lr does
                g["lr"] = lr
            opt.zero_grad()
            (0.5 * ((torch.tensor(A) @ x - torch.tensor(B)) ** 2).sum()).backward()
            opt.step()
        return x.detach().numpy()

    def by_hand(nesterov, torch_form, wd=0.0):
        x, v = X0.copy(), np.zeros(4)
        for lr in lrs:
            dx = grad(x) + wd * x  # regularize l2: the optimizer's coupled weight decay
            if torch_form:
                v = mu * v + dx
                x -= lr * (dx + mu * v if nesterov else v)
            else:
                v_prev, v = v, mu * v - lr * dx
                x += -mu * v_prev + (1 + mu) * v if nesterov else v
        return x

    np.testing.assert_allclose(run("momentum", {"lr": 0.1, "mu": mu}), by_hand(False, False), rtol=1e-9)
    np.testing.assert_allclose(run("nesterov", {"lr": 0.1, "mu": mu}), by_hand(True, False), rtol=1e-9)
    np.testing.assert_allclose(run("momentum", {"lr": 0.1, "mu": mu}, 0.3), by_hand(False, False, 0.3), rtol=1e-9)
    np.testing.assert_allclose(run("sgd", {"lr": 0.1, "momentum": mu}), by_hand(False, True), rtol=1e-9)
    np.testing.assert_allclose(run("sgd", {"lr": 0.1, "momentum": mu, "nesterov": True}), by_hand(True, True), rtol=1e-9)
    assert np.abs(by_hand(False, False) - by_hand(False, True)).max() > 1e-2  # the two forms really differ here


# ---------------------------------------------------------------- nnc's update rules vs torch.optim

TORCH = {  # the word -> torch.optim's class and arguments for the same rule (single-tensor, as on a CPU)
    "sgd": lambda g, p: torch.optim.SGD(g, lr=p.lr, momentum=0.9, nesterov=True, foreach=False),
    "adagrad": lambda g, p: torch.optim.Adagrad(g, lr=p.lr, eps=p.eps, foreach=False),
    "rmsprop": lambda g, p: torch.optim.RMSprop(g, lr=p.lr, alpha=p.decay, eps=p.eps, foreach=False),
    "adam": lambda g, p: torch.optim.Adam(g, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps, foreach=False),
    "adamw": lambda g, p: torch.optim.AdamW(g, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps,
                                             weight_decay=p.weight_decay, foreach=False),
}


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))


def _groups(net, kind):
    """Two groups, the notes' L2 on one (AdamW's decay is its own), the second at twice the rate."""
    ps = list(net.parameters())
    l2 = ({}, {}) if kind == "adamw" else ({"weight_decay": 0.01}, {"weight_decay": 0.0})
    return [{"params": ps[::2], "lr_mult": 1.0, **l2[0]}, {"params": ps[1::2], "lr_mult": 2.0, **l2[1]}]


def _steps(net, opt, n, first=0):
    g = torch.Generator().manual_seed(1)
    for i in range(first + n):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        if i < first:
            continue
        for group in opt.param_groups:  # a schedule: the rate changes between steps
            group["lr"] = (0.05 if i < 3 else 0.01) * group["lr_mult"]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("kind", sorted(TORCH))
def test_update_rules_are_torch_optims_to_the_bit_and_share_its_state(kind):
    """Two parameter groups (L2 on one), a changing rate: nnc's rule and torch.optim's give
    identical weights; torch.optim's state dict, saved as `last` checkpoints save it, resumes in
    nnc's rule and ends where torch.optim's own run ends."""
    from nnc.runtime import state

    d = OPTIMIZERS[kind]
    p = d.params(**({"momentum": 0.9, "nesterov": True} if kind == "sgd" else {}), **CASES[kind])
    nets = []
    for make in (lambda g: d.build(p, g), lambda g: TORCH[kind](g, p)):
        net = _net()
        _steps(net, make(_groups(net, kind)), 7)
        nets.append(net)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    net = _net()  # 4 steps in torch.optim, its state saved as a checkpoint holds it, 3 more in nnc's rule
    theirs = TORCH[kind](_groups(net, kind), p)
    _steps(net, theirs, 4)
    tensors, meta = state.optimizer_to_tensors(theirs)
    ours = d.build(p, _groups(net, kind))
    state.optimizer_from_tensors(ours, tensors, meta)
    _steps(net, ours, 3, first=4)
    for a, b in zip(net.parameters(), nets[1].parameters()):
        assert torch.equal(a, b)


def test_no_update_rule_imports_torch_dynamo():
    """torch.optim's classes import torch._dynamo (~1.5 s) when built and at every step: nnc's do not."""
    code = ("import sys, torch\n"
            "from nnc.compiler.vocab.optimizers import OPTIMIZERS\n"
            "for kind, d in OPTIMIZERS.items():\n"
            "    if d.full_batch: continue\n"
            "    w = torch.nn.Parameter(torch.ones(3))\n"
            "    o = d.build(d.params(), [{'params': [w], 'lr_mult': 1.0, 'weight_decay': 0.0}])\n"
            "    (w ** 2).sum().backward(); o.step(); o.zero_grad(); o.load_state_dict(o.state_dict())\n"
            "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'sympy'))))\n")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
