"""Initializers on real built layers against the lecture notes' formulas ("Training Neural
Networks", weight initialization): xavier = randn(fan_in, fan_out) / sqrt(fan_in),
he = randn * sqrt(2 / fan_in); plus Glorot's fan average, fan_out mode, the uniform variants,
gaussian, orthogonal and constant, the `before ACTIVATION` bias rule and per-layer overrides.
And `nnc show` prints the std the weights really have."""

import json
import math
import re

import pytest
import torch
from conftest import SPECS

from nnc.cli import main as nnc_main
from nnc.compiler.checks import check
from nnc.compiler.load import load_spec, load_text
from nnc.compiler.torch_module import build_model


def build(body: str, init: str, input: str = "vector(1000)", seed: int = 0):
    spec = load_text(f"nnspec 1\nmodel M {{\n    input {input}\n{body}\n}}\ninit {init}\n")
    graph = check(spec)
    return graph, build_model(graph, seed=seed)


def w(model, path: str) -> torch.Tensor:
    return model.get_submodule(path).weight.detach().double()


def b(model, path: str) -> torch.Tensor:
    return model.get_submodule(path).bias.detach()  # float32: compare with == to float32 constants


def close(measured: float, expected: float, rel: float = 0.03) -> bool:
    return abs(measured - expected) <= rel * expected


# A big dense layer (1000 -> 800, 800k weights: the sample std is within ~0.1% of the true one)
# and a big conv (128 -> 256 channels, 3x3: fan_in 1152, fan_out 2304, 295k weights).
DENSE = "    dense fc1 800\n    relu\n    dense fc2 10"
CONV = "    conv c1 256 kernel 3 pad 1\n    relu\n    global_avgpool\n    dense out 10"


# ---------------------------------------------------------------- the formulas


def test_he_normal_std_is_sqrt_2_over_fan_in():
    _, m = build(DENSE, "weights he")
    assert close(w(m, "fc1").std().item(), math.sqrt(2 / 1000))
    assert abs(w(m, "fc1").mean().item()) < 1e-3
    assert close(w(m, "fc2").std().item(), math.sqrt(2 / 800), rel=0.1)  # 8,000 weights


def test_he_on_a_conv_counts_the_receptive_field():
    _, m = build(CONV, "weights he", input="image(128, 8, 8)")
    assert close(w(m, "c1").std().item(), math.sqrt(2 / (128 * 3 * 3)))


def test_he_fan_out_mode():
    _, m = build(CONV, "weights he(mode=fan_out)", input="image(128, 8, 8)")
    assert close(w(m, "c1").std().item(), math.sqrt(2 / (256 * 3 * 3)))
    _, m = build(DENSE, "weights he(mode=fan_out)")
    assert close(w(m, "fc1").std().item(), math.sqrt(2 / 800))


def test_kaiming_is_he():
    _, a = build(DENSE, "weights kaiming")
    _, c = build(DENSE, "weights he")
    assert torch.equal(w(a, "fc1"), w(c, "fc1"))


def test_xavier_std_is_one_over_sqrt_fan_in():
    """The notes' Xavier: randn / sqrt(fan_in), *not* Glorot's sqrt(2 / (fan_in + fan_out))."""
    _, m = build(DENSE, "weights xavier")
    assert close(w(m, "fc1").std().item(), math.sqrt(1 / 1000))
    _, m = build(DENSE, "weights xavier(mode=fan_out)")
    assert close(w(m, "fc1").std().item(), math.sqrt(1 / 800))


def test_glorot_is_the_fan_average():
    _, m = build(DENSE, "weights glorot")
    assert close(w(m, "fc1").std().item(), math.sqrt(2 / (1000 + 800)))
    _, m = build(CONV, "weights glorot", input="image(128, 8, 8)")
    assert close(w(m, "c1").std().item(), math.sqrt(2 / (1152 + 2304)))


def _uniform_ok(t: torch.Tensor, low: float, high: float) -> None:
    assert t.min().item() >= low and t.max().item() <= high
    width = high - low
    assert t.min().item() < low + 0.01 * width and t.max().item() > high - 0.01 * width  # fills the range
    assert close(t.std().item(), width / math.sqrt(12))
    assert abs(t.mean().item() - (low + high) / 2) < 0.01 * width


def test_uniform_variants_bounds():
    _, m = build(DENSE, "weights uniform(low=-0.2, high=0.3)")
    _uniform_ok(w(m, "fc1"), -0.2, 0.3)
    _, m = build(DENSE, "weights uniform")  # default U(-0.05, 0.05)
    _uniform_ok(w(m, "fc1"), -0.05, 0.05)
    bound = math.sqrt(6 / (1000 + 800))
    _, m = build(DENSE, "weights glorot_uniform")
    _uniform_ok(w(m, "fc1"), -bound, bound)
    _, m = build(DENSE, "weights he_uniform")
    _uniform_ok(w(m, "fc1"), -math.sqrt(6 / 1000), math.sqrt(6 / 1000))
    _, m = build(DENSE, "weights he_uniform(mode=fan_out)")
    _uniform_ok(w(m, "fc1"), -math.sqrt(6 / 800), math.sqrt(6 / 800))


def test_uniform_initializer_is_not_a_search_range():
    """`uniform` is both an initializer and a search-range word: in an init rule the call is the
    initializer (positional or keyword bounds), while ranges inside an initializer's arguments
    are still search ranges."""
    for init in ("weights uniform(-0.2, 0.3)", "weights uniform(low=-0.2, high=0.3)"):
        graph, m = build(DENSE, init)
        _uniform_ok(w(m, "fc1"), -0.2, 0.3)
        assert graph.spec.search == ()
    graph, m = build(DENSE, "weights gaussian(std=loguniform(1e-3, 1e-1))")
    (r,) = graph.spec.search
    assert r.path == "init.weights.std" and r.dist == "loguniform"
    assert close(w(m, "fc1").std().item(), 0.01)  # the representative: the geometric midpoint


def test_uniform_needs_low_below_high():
    from nnc.diagnostics import NncError

    with pytest.raises(NncError):
        build(DENSE, "weights uniform(low=0.3, high=-0.2)")


def test_gaussian():
    _, m = build(DENSE, "weights gaussian(std=0.01)")
    assert close(w(m, "fc1").std().item(), 0.01)
    assert abs(w(m, "fc1").mean().item()) < 1e-4
    _, m = build(DENSE, "weights gaussian(std=0.02, mean=0.5)")
    assert close(w(m, "fc1").std().item(), 0.02)
    assert abs(w(m, "fc1").mean().item() - 0.5) < 1e-3
    _, m = build(DENSE, "weights gaussian")  # default std 0.01
    assert close(w(m, "fc1").std().item(), 0.01)


def test_orthogonal_dense_both_orientations():
    # fc1: weight (256, 64), tall: orthonormal columns, W^T W = I
    # fc2: weight (32, 256), wide: orthonormal rows, W W^T = I
    _, m = build("    dense fc1 256\n    tanh\n    dense fc2 32", "weights orthogonal", input="vector(64)")
    w1, w2 = w(m, "fc1"), w(m, "fc2")
    assert torch.allclose(w1.T @ w1, torch.eye(64, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(w2 @ w2.T, torch.eye(32, dtype=torch.float64), atol=1e-5)
    _, m = build("    dense fc1 256\n    tanh\n    dense fc2 32", "weights orthogonal(gain=2)", input="vector(64)")
    w1 = w(m, "fc1")
    assert torch.allclose(w1.T @ w1, 4 * torch.eye(64, dtype=torch.float64), atol=1e-4)


def test_orthogonal_conv_flattens_the_filters():
    _, m = build("    conv c1 16 kernel 3\n    relu\n    global_avgpool\n    dense out 10", "weights orthogonal",
                 input="image(4, 8, 8)")
    flat = w(m, "c1").reshape(16, -1)  # (16, 36): wide, orthonormal rows
    assert torch.allclose(flat @ flat.T, torch.eye(16, dtype=torch.float64), atol=1e-5)


def test_orthogonal_recurrent_weights():
    _, m = build("    lstm rnn1 32\n    dense out 10", "weights orthogonal", input="sequence(5, 16)")
    lstm = m.get_submodule("rnn1")
    hh = lstm.weight_hh_l0.detach().double()  # (128, 32), tall
    assert torch.allclose(hh.T @ hh, torch.eye(32, dtype=torch.float64), atol=1e-5)


def test_constant():
    _, m = build(DENSE, "weights constant(0.5), bias constant(-0.25)")
    assert (w(m, "fc1") == 0.5).all() and (w(m, "fc2") == 0.5).all()
    assert (b(m, "fc1") == -0.25).all() and (b(m, "fc2") == -0.25).all()


def test_default_init_is_auto_he_before_relu_xavier_otherwise_and_zero_bias():
    graph, m = build("    dense fc1 800\n    relu\n    dense fc2 800\n    tanh\n    dense fc3 10", "bias constant(0)")
    assert close(w(m, "fc1").std().item(), math.sqrt(2 / 1000))
    assert close(w(m, "fc2").std().item(), math.sqrt(1 / 800))
    assert close(w(m, "fc3").std().item(), math.sqrt(1 / 800), rel=0.1)
    for name in ("fc1", "fc2", "fc3"):
        assert (b(m, name) == 0).all()
    rules = {l.name: l.init[0][2] for l in graph.layers() if l.init}
    assert rules == {"fc1": "auto: he", "fc2": "auto: xavier", "fc3": "auto: xavier"}
    # and without any init section at all
    spec = load_text("model M {\n input vector(1000)\n dense fc1 800\n relu\n dense fc2 10\n}\n")
    m = build_model(check(spec))
    assert close(w(m, "fc1").std().item(), math.sqrt(2 / 1000))
    assert (b(m, "fc1") == 0).all()


def _activations():
    from nnc.compiler.layers import LAYERS

    return sorted(k for k, d in LAYERS.items() if d.activation)


@pytest.mark.parametrize("act", _activations())
def test_auto_init_before_each_activation_is_the_one_its_record_names(act):
    """ReLU-family activations (relu ... gelu, silu, maxout) get he, the others xavier, through a
    batchnorm in between; `nnc show`'s rule text says the same."""
    from nnc.compiler.layers import LAYERS

    graph, m = build(f"    dense fc1 800\n    batchnorm\n    {act}", "bias constant(0)")
    want = LAYERS[act].init_before or "xavier"
    assert want == ("he" if act in ("relu", "relu6", "leaky_relu", "prelu", "elu", "gelu", "silu", "maxout") else "xavier")
    assert close(w(m, "fc1").std().item(), math.sqrt((2 if want == "he" else 1) / 1000))
    assert graph.find("fc1").init[0][2] == f"auto: {want}"


def test_norm_scales_and_prelu_slopes_are_fixed():
    """Rules set weights and biases; batchnorm's scale/shift and prelu's slope keep their values."""
    _, m = build("    dense fc1 100\n    batchnorm\n    prelu\n    dense fc2 10", "weights constant(3), bias constant(2)")
    bn, pr = m.get_submodule("bn1"), m.get_submodule("prelu1")
    assert (bn.weight == 1).all() and (bn.bias == 0).all()
    assert (pr.weight == 0.25).all()
    assert (w(m, "fc1") == 3).all() and (b(m, "fc1") == 2).all()


def test_embedding_auto_is_unit_normal():
    _, m = build("    embedding embed1 64\n    lstm 32\n    dense out 10", "bias constant(0)",
                 input="tokens(10, 5000)")
    assert close(w(m, "embed1").std().item(), 1.0)


# ---------------------------------------------------------------- rules


def test_bias_before_relu_only_on_layers_followed_by_relu():
    body = ("    dense fc1 100\n    relu\n"
            "    dense fc2 100\n    batchnorm\n    relu\n"  # a norm between the layer and its relu
            "    dense fc3 100\n    tanh\n"
            "    dense fc4 100\n    dropout 0.5\n    relu\n"
            "    dense fc5 10")
    _, m = build(body, "weights he, bias constant(0.01) before relu")
    assert (b(m, "fc1") == 0.01).all()
    assert (b(m, "fc2") == 0.01).all()
    assert (b(m, "fc3") == 0).all()  # followed by tanh: the default bias constant(0)
    assert (b(m, "fc4") == 0.01).all()
    assert (b(m, "fc5") == 0).all()  # the output layer
    # the weights rule is untouched by the bias rule
    assert close(w(m, "fc3").std().item(), math.sqrt(2 / 100), rel=0.05)


def test_bias_before_relu_on_the_convs_of_digits_cnn():
    graph = check(load_spec(SPECS / "digits_cnn.nnspec"))
    m = build_model(graph)
    for name in ("conv1", "conv2", "fc1"):
        assert (b(m, name) == 0.01).all(), name
    assert (b(m, "fc2") == 0).all()


def test_before_rule_against_a_general_rule_of_the_same_target():
    """`bias constant(1) before relu` beats a general `bias constant(0)` in either order (AlexNet's rule)."""
    for init in ("bias constant(0), bias constant(1) before relu", "bias constant(1) before relu, bias constant(0)"):
        _, m = build(DENSE, init)
        assert (b(m, "fc1") == 1).all() and (b(m, "fc2") == 0).all(), init


def test_per_layer_overrides_win():
    body = "    dense fc1 800\n    relu\n    dense fc2 800\n    relu\n    dense fc3 10"
    for init in ("fc2 weights gaussian(std=0.5), weights he, bias constant(0.1) before relu, fc1 bias constant(-3)",
                 "weights he, bias constant(0.1) before relu, fc2 weights gaussian(std=0.5), fc1 bias constant(-3)",
                 "fc1 bias constant(-3), bias constant(0.1) before relu, weights he, fc2 weights gaussian(std=0.5)"):
        graph, m = build(body, init)
        assert close(w(m, "fc1").std().item(), math.sqrt(2 / 1000)), init
        assert close(w(m, "fc2").std().item(), 0.5), init
        assert (b(m, "fc1") == -3).all(), init  # the override beats `before relu`
        assert (b(m, "fc2") == 0.1).all(), init
        assert (b(m, "fc3") == 0).all(), init
        rules = {l.name: [r for _, _, r in l.init] for l in graph.layers() if l.init}
        assert rules["fc2"] == ["gaussian", "constant"]


def test_override_of_an_unknown_layer_is_an_error():
    from nnc.diagnostics import NncError

    with pytest.raises(NncError, match="fc9"):
        build(DENSE, "weights he, fc9 weights gaussian(std=0.5)")


def test_residual_layers_take_the_rules_by_path():
    body = ("    conv c0 32 kernel 3 pad 1\n    relu\n"
            "    residual blk {\n        conv ca 32 kernel 3 pad 1\n        relu\n        conv cb 32 kernel 3 pad 1\n    }\n"
            "    global_avgpool\n    dense out 10")
    _, m = build(body, "weights he, cb weights constant(0)", input="image(32, 8, 8)")
    assert (m.get_submodule("blk.cb").weight == 0).all()  # a zero-initialized residual branch end
    assert close(m.get_submodule("blk.ca").weight.std().item(), math.sqrt(2 / 288), rel=0.05)


def test_a_rule_naming_a_residual_block_covers_its_layers():
    body = ("    residual blk project {\n        conv ca 16 kernel 3 stride 2 pad 1\n        relu\n"
            "        conv cb 16 kernel 3 pad 1\n    }\n    relu\n    global_avgpool\n    dense out 10")
    graph, m = build(body, "weights he, blk weights constant(0.5), cb weights constant(0), blk bias constant(0.1)",
                     input="image(8, 8, 8)")
    assert (m.get_submodule("blk.ca").weight == 0.5).all()
    assert (m.get_submodule("blk.proj").weight == 0.5).all()  # the projection shortcut too
    assert (m.get_submodule("blk.cb").weight == 0).all()  # the layer's own rule beats its block's
    assert (m.get_submodule("blk.ca").bias == 0.1).all() and (m.get_submodule("blk.cb").bias == 0.1).all()
    assert close(m.out.weight.std().item(), math.sqrt(2 / 16), rel=0.25)  # outside the block: he
    assert graph.find("out").init[0][2] == "he"


def test_same_seed_same_weights_other_seed_other_weights():
    _, a = build(DENSE, "weights he", seed=1)
    _, c = build(DENSE, "weights he", seed=1)
    _, d = build(DENSE, "weights he", seed=2)
    assert torch.equal(w(a, "fc1"), w(c, "fc1"))
    assert not torch.equal(w(a, "fc1"), w(d, "fc1"))


def test_the_spec_seed_is_the_default():
    spec = load_text("model M {\n input vector(100)\n dense fc1 100\n}\ntrain seed 7\n")
    g = check(spec)
    assert torch.equal(build_model(g).fc1.weight, build_model(g, seed=7).fc1.weight)
    assert not torch.equal(build_model(g).fc1.weight, build_model(g, seed=0).fc1.weight)


# ---------------------------------------------------------------- nnc show says what the weights are


def _show_json(capsys, *args) -> dict:
    assert nnc_main(["show", "--json", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def _dist(text: str) -> tuple:
    if m := re.fullmatch(r"N\((\S+), std (\S+)\)", text):
        return "normal", float(m.group(1)), float(m.group(2))
    if m := re.fullmatch(r"U\((\S+), (\S+)\)", text):
        return "uniform", float(m.group(1)), float(m.group(2))
    if m := re.fullmatch(r"orthogonal, gain (\S+)", text):
        return "orthogonal", float(m.group(1))
    if m := re.fullmatch(r"= (\S+)", text):
        return "constant", float(m.group(1))
    raise AssertionError(f"unreadable init in nnc show: {text!r}")


def _agrees(t: torch.Tensor, dist: tuple, where: str) -> None:
    t = t.detach().double().flatten()
    n = t.numel()
    if dist[0] == "normal":
        _, mean, std = dist
        # sampling error of the std ~ std / sqrt(2n); show prints 4 significant digits
        tol = 5 / math.sqrt(2 * n) + 1e-3
        assert abs(t.std().item() - std) <= tol * std, f"{where}: std {t.std().item():.4g}, shown {std:.4g}"
        assert abs(t.mean().item() - mean) <= 5 * std / math.sqrt(n) + 1e-3 * abs(mean), where
    elif dist[0] == "uniform":
        _, lo, hi = dist
        slack = 1e-3 * (hi - lo)
        assert t.min().item() >= lo - slack and t.max().item() <= hi + slack, where
        if n >= 1000:
            assert t.min().item() < lo + 0.02 * (hi - lo) and t.max().item() > hi - 0.02 * (hi - lo), where
    elif dist[0] == "constant":
        assert torch.allclose(t, torch.full_like(t, dist[1]), rtol=1e-3, atol=1e-6), where
    else:
        assert dist[0] == "orthogonal"


SHOW_SPEC = """nnspec 1
model Shown {
    input image(64, 16, 16)
    conv c1 128 kernel 3 pad 1
    relu
    conv c2 128 kernel 3 pad 1
    tanh
    maxpool kernel 2
    dense fc1 512
    relu
    dense fc2 256
    leaky_relu
    dense fc3 10
}
init {
    weights he, bias constant(0.01) before relu
    c2 weights glorot
    fc1 weights he(mode=fan_out)
    fc2 weights he_uniform
    fc3 weights gaussian(std=0.05, mean=0.1), fc3 bias constant(-0.5)
}
"""


def test_nnc_show_json_reports_the_std_the_weights_have(tmp_path, capsys):
    path = tmp_path / "shown.nnspec"
    path.write_text(SHOW_SPEC)
    report = _show_json(capsys, path)
    model = build_model(check(load_spec(path)))
    shown = {}
    for layer in report["layers"]:
        module = model.get_submodule(layer["path"])
        for entry in layer["init"]:
            _agrees(getattr(module, entry["tensor"]), _dist(entry["dist"]), f"{layer['path']}.{entry['tensor']}")
            shown[f"{layer['path']}.{entry['tensor']}"] = _dist(entry["dist"])
    # and what it shows is the formulas
    assert shown["c1.weight"] == ("normal", 0, pytest.approx(math.sqrt(2 / 576), rel=1e-3))
    assert shown["c2.weight"] == ("normal", 0, pytest.approx(math.sqrt(2 / (1152 + 1152)), rel=1e-3))
    assert shown["fc1.weight"] == ("normal", 0, pytest.approx(math.sqrt(2 / 512), rel=1e-3))
    bound = math.sqrt(6 / 512)
    assert shown["fc2.weight"] == ("uniform", pytest.approx(-bound, rel=1e-3), pytest.approx(bound, rel=1e-3))
    assert shown["fc3.weight"] == ("normal", 0.1, 0.05)
    assert shown["c1.bias"] == ("constant", 0.01)
    assert shown["c2.bias"] == ("constant", 0)
    assert shown["fc1.bias"] == ("constant", 0.01)
    assert shown["fc2.bias"] == ("constant", 0)  # leaky_relu is not relu
    assert shown["fc3.bias"] == ("constant", -0.5)


def test_nnc_show_table_prints_the_same_std(tmp_path, capsys):
    path = tmp_path / "shown.nnspec"
    path.write_text(SHOW_SPEC)
    assert nnc_main(["show", str(path)]) == 0
    text = capsys.readouterr().out
    model = build_model(check(load_spec(path)))
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    std = float(re.search(r"weight he N\(0, std (\S+)\)", rows["c1"]).group(1))
    assert std == pytest.approx(math.sqrt(2 / 576), rel=1e-3)
    assert model.c1.weight.std().item() == pytest.approx(std, rel=0.02)
    assert "bias = 0.01" in rows["c1"]


@pytest.mark.parametrize("name", ["lenet5", "two_layer", "deep_tanh", "digits_mlp", "digits_cnn", "seq_lstm",
                                  "resnet18"])
def test_nnc_show_agrees_with_the_built_library_specs(name, capsys):
    report = _show_json(capsys, SPECS / f"{name}.nnspec")
    model = build_model(check(load_spec(SPECS / f"{name}.nnspec")))
    checked = 0
    for layer in report["layers"]:
        module = model.get_submodule(layer["path"])
        for entry in layer["init"]:
            _agrees(getattr(module, entry["tensor"]), _dist(entry["dist"]), f"{name}: {layer['path']}.{entry['tensor']}")
            checked += 1
    assert checked > 0


# ---------------------------------------------------------------- the lecture's experiment spec


def test_deep_tanh_is_the_lectures_setup():
    """specs/deep_tanh.nnspec: 10 x (500 tanh units) with xavier, std 1/sqrt(500); its header's
    `--set init.weights=...` switches to the collapsing gaussian(std=0.01). (The activation
    statistics themselves are tests/test_monitors.py's.)"""
    graph = check(load_spec(SPECS / "deep_tanh.nnspec"))
    dense = [l for l in graph.layers() if l.kind == "dense"]
    assert len(dense) == 11 and sum(l.kind == "tanh" for l in graph.layers()) == 10
    for l in dense[:10]:
        (_, dist, rule), (_, bias, _) = l.init
        assert rule == "xavier" and dist.a == pytest.approx(1 / math.sqrt(500)) and bias.a == 0
    m = build_model(graph)
    assert close(m.get_submodule(dense[3].path).weight.std().item(), 1 / math.sqrt(500))

    small = check(load_spec(SPECS / "deep_tanh.nnspec", ("init.weights=gaussian(std=0.01)",)))
    for l in [l for l in small.layers() if l.kind == "dense"]:
        (_, dist, rule), (_, bias, _) = l.init
        assert rule == "gaussian" and dist.a == 0.01 and bias.a == 0
    m = build_model(small)
    assert close(m.get_submodule(dense[3].path).weight.std().item(), 0.01)
