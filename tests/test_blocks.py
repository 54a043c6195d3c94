"""Blocks with parameters, branches and merges, references to earlier outputs, includes: what
they mean (names, shapes, the values each layer reads), and how their mistakes are reported (at
the use and the definition, once however often a block is used, at the include line)."""

import json

import onnx
import pytest
import torch
from export_cases import nnc_main, randomize

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec, load_text
from nnc.compiler.python_source import generate
from nnc.compiler.torch_module import build_model
from nnc.diagnostics import NncError
from nnc.runtime.export import export

STAGES = """\
block basic(width, stride=1, down=false) {
    residual project down {
        conv conv1 width kernel 3 stride stride pad 1 bias false
        batchnorm bn1
        relu
        conv conv2 width kernel 3 pad 1 bias false
        batchnorm bn2
    }
    relu
}
block stage(width, stride=2) {
    basic block1 width stride stride down true
    basic block2 width
}
model Staged {
    input image(3, 16, 16)
    conv stem 8 kernel 3 pad 1
    stage stage1 8 stride 1
    stage stage2 16
    global_avgpool
    dense fc 4
}
loss mse
"""


def errors(text: str, name: str = "t.nnspec") -> list:
    with pytest.raises(NncError) as e:
        check(load_text(text, name))
    return e.value.diagnostics


def test_names_from_the_uses_are_the_module_onnx_and_source_names(tmp_path):
    graph = check(load_text(STAGES, "s.nnspec"))
    paths = [l.path for l in graph.layers()]
    assert "stage2.block1.res1.conv1" in paths and "stage2.block1.res1.proj" in paths
    model = randomize(build_model(graph))
    names = set(model.state_dict())
    assert {"stage2.block1.res1.conv1.weight", "stage2.block1.res1.proj_bn.running_var", "fc.bias"} <= names
    proto = export(graph, model, None, None, None).model
    inits = {t.name for t in proto.graph.initializer}
    assert "stage2.block1.res1.conv1.weight" in inits
    assert "self.stage2.block1.res1.conv1 = nn.Conv2d(8, 16" in generate(graph)
    (tmp_path / "s.nnspec").write_text(STAGES)
    r = nnc_main("show", "--json", tmp_path / "s.nnspec")
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    assert listing["params"] == graph.n_params
    conv = next(l for l in listing["layers"] if l["path"] == "stage2.block2.res1.conv2")
    assert conv["defined"]["line"] == 6 and [u["block"] for u in conv["uses"]] == ["stage", "basic"]
    assert [u["line"] for u in conv["uses"]] == [19, 13]
    assert "[8x8x16] STAGE2: stage(16)" in listing["listing"]


def test_rules_name_layers_by_path_prefix():
    """init / lr_mult / freeze take a layer's path, or a prefix of it (a whole stage)."""
    text = STAGES + "init stage2 weights constant(0.5), stage1.block2.res1.conv1 weights constant(2)\n" \
                    "train freeze stage1\noptimizer sgd(lr=0.1), lr_mult(stage2.block1=3)\n"
    graph = check(load_text(text))
    init = {l.path: l.init[0][1] for l in graph.layers() if l.init}
    assert init["stage2.block2.res1.conv2"].a == 0.5 and init["stage1.block2.res1.conv1"].a == 2
    assert init["stage1.block1.res1.conv1"].kind == "normal"
    from nnc.runtime.param_groups import param_groups

    model = build_model(graph)
    groups = param_groups(model, graph, coupled_l2=True)
    assert {g["lr_mult"] for g in groups} == {1.0, 3.0}
    assert not model.stage1.block1.res1.conv1.weight.requires_grad and model.stage2.block1.res1.conv1.weight.requires_grad
    d = errors(STAGES + "train freeze stage3\n")
    assert "unknown layer 'stage3'" in d[0].message


@pytest.mark.parametrize("case", ["block_residual", "block_inception", "block_dense", "block_inverted", "unet_skips",
                                  "sequence_merges", "two_inputs", "two_outputs", "conv_transpose", "concat"])
def test_init_rules_reach_every_layer_of_the_new_constructs(case):
    """The built weights have the distribution the rules resolve to: a rule by path prefix (a
    block use), the general rule, and `before relu` through the merges."""
    from export_cases import EXTRA, KINDS, spec_text

    text = spec_text(KINDS.get(case) or EXTRA[case]) + "init weights gaussian(std=0.05), bias constant(0.5)\n"
    graph = check(load_text(text))
    model = build_model(graph)
    seen = 0
    for layer in graph.layers():
        for tensor, dist, rule in layer.init:
            t = model.get_parameter(f"{layer.path}.{tensor}").detach()
            if rule == "fixed":
                continue
            if tensor == "bias":
                assert torch.all(t == 0.5), layer.path
            elif t.numel() >= 64:
                assert t.std().item() == pytest.approx(0.05, rel=0.35), layer.path
            seen += 1
    assert seen >= 2


def test_an_error_in_a_block_used_three_times_is_reported_once_with_both_lines(tmp_path):
    text = STAGES.replace("basic block2 width", "basic block2 width\n    basic block3 width").replace(
        "conv conv2 width kernel 3 pad 1 bias false", "conv conv2 width kernal 3 pad 1 bias false")
    (tmp_path / "e.nnspec").write_text(text)
    r = nnc_main("check", tmp_path / "e.nnspec")
    assert r.returncode == 1
    assert r.stderr.count("error:") == 1, r.stderr
    assert "e.nnspec:6:26: error: unknown conv option 'kernal'" in r.stderr  # the line in the definition
    # and the places it is used (three uses of basic, in two of stage: the first few, then a count)
    assert "e.nnspec:12:5: note: in block basic, used here" in r.stderr and "note: ... and 2 more" in r.stderr
    assert "help: did you mean 'kernel'?" in r.stderr


def test_an_argument_that_breaks_a_layer_points_at_the_use_and_the_definition():
    d = errors(STAGES.replace("stage stage2 16", "stage stage2 0"))
    e = d[0]
    assert e.message == "conv1 filters must be > 0, got 0" and (e.span.line, e.span.column) == (19, 18)
    assert [(s.line, m) for s, m in e.related][:3] == [(3, "in the definition of block basic"),
                                                                 (12, "in block basic, used here as stage2.block1"),
                                                                 (19, "in block stage, used here as stage2")]


@pytest.mark.parametrize("body, message, line", [
    ("basic b 8 strid 2", "unknown basic parameter 'strid'", 12),
    ("basic b", "basic needs `width`", 12),
    ("basic b 8 4 true 9", "basic takes 3 value(s): unexpected '9'", 12),
    ("loop b 8", "block loop uses itself (loop -> other -> loop)", 8),
    ("conv 4 kernel 3\n    concat with b", "no output named 'b' before this line", 13),
    ("conv c 4 kernel 3\n    concat with d\n    conv d 4 kernel 1", "'d' is defined later (line 14)", 13),
    ("conv a 4 kernel 3 pad 1\n    maxpool 2\n    concat with a", "concat needs equal spatial sizes: image(4, 8, 8) "
     "and image(4, 4, 4)", 14),
    ("conv a 4 kernel 3 pad 1\n    conv 5 kernel 3 pad 1\n    add with a", "add needs equal shapes: image(4, 8, 8) and "
     "image(5, 8, 8)", 14),
    ("branch { \n        relu\n    }", "branch goes inside a concat or add block", 12),
    ("concat {\n        relu\n    }", "concat of 1 branch: it needs two or more", 12),
    ("if 3 {\n        relu\n    }", "if reads `if FLAG { ... }`", 12),
], ids=["unknown_param", "missing_param", "too_many", "recursion", "unknown_ref", "later_ref", "concat_sizes",
        "add_shapes", "branch_outside", "one_branch", "if_not_bool"])
def test_mistakes(body, message, line):
    text = ("block basic(width, stride=1, down=false) {\n    conv width kernel 3 stride stride pad 1\n}\n"
            "block loop(w) {\n    other w\n}\nblock other(w) {\n    loop w\n}\n"
            f"model M {{\n    input image(3, 8, 8)\n    {body}\n    global_avgpool\n    dense 2\n}}\nloss mse\n")
    d = errors(text)
    assert any(message in x.message and x.span.line == line for x in d), [(x.span.line, x.message) for x in d]


def test_branches_merges_and_from_compute_what_they_say():
    """A hand-written forward of the same weights: concat order, add, `from`, `identity`."""
    text = """model M {
    input image(2, 6, 6)
    conv a 3 kernel 3 pad 1
    concat cat {
        conv p 2 kernel 1
        branch q {
            conv c 4 kernel 3 pad 1
            relu
        }
        identity
    }
    from a
    conv b 9 kernel 1
    add with cat
    concat with input a
}
loss mse
"""
    graph = check(load_text(text))
    assert [(l.path, l.sources) for l in graph.layers() if l.merge] == [
        ("cat", ("cat.p", "cat.q.relu1", "cat.id1")), ("add1", ("cat", "b")), ("cat1", ("input", "a", "add1"))]
    m = randomize(build_model(graph))
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        a = m.a(x)
        cat = torch.cat([m.cat.p(a), torch.relu(m.cat.q.c(a)), a], 1)
        want = torch.cat([x, a, cat + m.b(a)], 1)
        assert torch.allclose(m(x), want)
    assert graph.output.dims == (2 + 3 + 9, 6, 6)


def test_several_inputs_and_outputs_export_and_compile(tmp_path):
    text = """model Two {
    input image image(1, 8, 8)
    input meta vector(3)
    conv c 4 kernel 3 pad 1
    relu
    global_avgpool
    concat with meta
    dense main 5
    output main
    from c
    conv seg 2 kernel 1
    output seg
}
loss main cross_entropy, seg cross_entropy weight 0.3
data synthetic(n=32)
"""
    graph = check(load_text(text))
    assert [n for n, _ in graph.inputs] == ["image", "meta"]
    assert [(n, str(s)) for n, _, s in graph.outputs] == [("main", "vector(5)"), ("seg", "image(2, 8, 8)")]
    assert [(o.output, o.weight) for o in graph.spec.losses] == [("main", 1.0), ("seg", 0.3)]
    model = randomize(build_model(graph))
    result = export(graph, model, None, None, tmp_path / "two.onnx")
    proto = onnx.load(str(tmp_path / "two.onnx"))
    assert [i.name for i in proto.graph.input] == ["image", "meta"]
    assert [o.name for o in proto.graph.output] == ["main", "seg"]
    assert all(r["ok"] for r in result.check.values())
    src = generate(graph)
    assert "def forward(self, image, meta):" in src and "return main, seg" in src
    d = errors(text.replace("loss main cross_entropy, seg cross_entropy weight 0.3", "loss main cross_entropy"))
    assert "output 'seg' has no loss" in d[0].message


def test_a_layer_nothing_reads_is_a_warning():
    graph = check(load_text("model M {\n    input vector(4)\n    dense a 3\n    from input\n    dense 2\n}\nloss mse\n"))
    assert any("a: nothing reads this layer's output" in w.message for w in graph.warnings)


# ---------------------------------------------------------------- includes


LIB = """block head(classes) {
    global_avgpool
    dense fc classes
}
optimizer adam(lr=1e-3)
train batch 16, epochs 1
"""


def test_include_override_and_selection(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.nnspec").write_text(LIB)
    (tmp_path / "lib" / "recipe.nnspec").write_text('include "blocks.nnspec"\noptimizer sgd(lr=0.5)\nloss mse\n')
    (tmp_path / "m.nnspec").write_text('include "lib/recipe.nnspec"\ninclude "lib/blocks.nnspec" head\n'
                                       "model M {\n    input image(2, 4, 4)\n    conv 3 kernel 1\n    head 7\n}\n"
                                       "train epochs 3\n")
    spec = load_spec(str(tmp_path / "m.nnspec"))
    assert spec.optimizer.kind == "sgd" and spec.loss.kind == "mse"  # the recipe's, over the blocks file's
    assert spec.train.epochs == 3 and spec.train.batch == 64  # its own section wins, whole
    assert sorted(spec.files) == [str(tmp_path / "lib" / "blocks.nnspec"), str(tmp_path / "lib" / "recipe.nnspec")]
    assert check(spec).output.dims == (7,)


def test_include_mistakes_are_reported_at_the_include_line(tmp_path):
    (tmp_path / "a.nnspec").write_text('include "b.nnspec"\nmodel M {\n    input vector(2)\n    dense 2\n}\n')
    (tmp_path / "b.nnspec").write_text('include "a.nnspec"\n')
    (tmp_path / "lib.nnspec").write_text(LIB.replace("dense fc classes", "dense fc clases"))
    (tmp_path / "c.nnspec").write_text('include "nowhere.nnspec"\ninclude "lib.nnspec" head optimizr\n'
                                       "model M {\n    input image(2, 4, 4)\n    head 3\n}\n")
    r = nnc_main("check", tmp_path / "a.nnspec")
    assert r.returncode == 1 and "b.nnspec:1:9: error: include cycle: a.nnspec -> b.nnspec -> a.nnspec" in r.stderr
    r = nnc_main("check", tmp_path / "c.nnspec")
    assert "c.nnspec:1:9: error: cannot include 'nowhere.nnspec': no such file" in r.stderr
    assert "c.nnspec:2:27: error: lib.nnspec has no section or block 'optimizr'" in r.stderr
    assert "lib.nnspec:3:14: error: unknown dense option 'clases'" in r.stderr  # in the included file,
    assert "c.nnspec:5:5: note: in block head, used here" in r.stderr  # used here


def test_a_checkpoint_carries_the_files_its_spec_includes(tmp_path):
    (tmp_path / "lib.nnspec").write_text(LIB + "loss cross_entropy\ndata digits, val 0.1, test 0.2\n")
    (tmp_path / "m.nnspec").write_text('include "lib.nnspec"\nmodel M {\n    input image(1, 8, 8)\n'
                                       "    conv 4 kernel 3 pad 1\n    relu\n    head 10\n}\n")
    r = nnc_main("train", tmp_path / "m.nnspec", "--out", tmp_path / "run", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    (tmp_path / "lib.nnspec").unlink()  # the checkpoint alone is enough
    r = nnc_main("eval", tmp_path / "run" / "best.safetensors", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    final = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["final"]
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(final["test_accuracy"])
