"""The spec library (specs/*.nnspec) compiles to PyTorch modules that match the inferred graph:
parameter counts, parameter names and every layer's output shape, checked with forward hooks
on a real forward pass. Plus the well-known totals, and the examples of docs/language.md."""

import re

import pytest
from conftest import ROOT, SPECS

from nnc.compiler.checks import check
from nnc.compiler.graph import residuals
from nnc.compiler.load import load_spec, load_text

SPEC_NAMES = ["alexnet", "vgg16", "resnet18", "lenet5", "two_layer", "deep_tanh", "digits_mlp", "digits_cnn",
              "seq_lstm", "resnet50", "googlenet", "densenet121", "mobilenet_v2", "unet"]

# The totals the papers / lecture notes quote (torchvision agrees for resnet18 and vgg16).
KNOWN_TOTALS = {
    "alexnet": 62_378_344,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "lenet5": 61_706,
    "two_layer": 308_310,  # 3072*100 + 100 + 100*10 + 10
    "resnet50": 25_557_032,  # torchvision's counts, as the issue states them
    "googlenet": 6_624_904,  # without the auxiliary classifiers
    "densenet121": 7_978_856,
    "mobilenet_v2": 3_504_872,
}


def test_the_library_is_what_these_tests_cover():
    assert sorted(p.stem for p in SPECS.glob("*.nnspec")) == sorted(SPEC_NAMES)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_spec_has_a_source_header(name):
    text = (SPECS / f"{name}.nnspec").read_text()
    first = text.splitlines()[0]
    assert first.startswith("#"), f"{name}.nnspec should open with a comment saying where the architecture comes from"
    assert len(first.lstrip("# ").strip()) > 10


@pytest.mark.parametrize("name", sorted(KNOWN_TOTALS))
def test_known_parameter_totals(name):
    graph = check(load_spec(SPECS / f"{name}.nnspec"))
    assert graph.n_params == KNOWN_TOTALS[name]


def _walk(graph):
    """Every (module path, expected output dims, info) of the graph: its layers with a module
    (merges are expressions in the forward pass, checked through the layers that read them)."""
    for n in graph.modules():
        yield n.path, n.output, n


def _example(shape, batch=2, meta=False):
    import torch

    if meta:
        return torch.empty(batch, *shape.dims, device="meta")
    if shape.kind == "tokens":
        return torch.randint(0, shape.vocab, (batch, *shape.dims))
    return torch.randn(batch, *shape.dims, generator=torch.Generator().manual_seed(0))


def assert_module_matches(graph, label: str = "") -> None:
    """Build `graph`, run a batch of 2 and compare the module with the graph: (a) parameter count,
    tensor names and shapes, (b) every layer's (and residual block's) output shape, captured with
    forward hooks on the submodules named after the layers."""
    import torch

    from nnc.compiler.torch_module import build_model

    meta = graph.flops > 1e9  # the ImageNet nets: shapes followed on the meta device, nothing computed
    with torch.device("meta" if meta else "cpu"):
        model = build_model(graph, init=not meta).eval()

    # (a) parameter count, and every tensor named after its layer with the inferred shape
    assert sum(p.numel() for p in model.parameters()) == graph.n_params
    expected = {f"{l.path}.{t.name}": t.shape for l in graph.layers() for t in l.tensors}
    got = {k: tuple(v.shape) for k, v in model.named_parameters()}
    assert got == expected

    # (b) every layer's output shape, captured on the module named after the layer
    seen: dict[str, tuple] = {}
    hooks = []
    entries = list(_walk(graph))
    assert len({path for path, _, _ in entries}) == len(entries), "module paths must be unique"
    for path, _, _ in entries:
        module = model.get_submodule(path)
        hooks.append(module.register_forward_hook(
            lambda m, i, o, path=path: seen.__setitem__(path, tuple(o.shape))))
    try:
        with torch.no_grad():
            out = model(_example(graph.input, meta=meta))
    finally:
        for h in hooks:
            h.remove()
    for path, shape, info in entries:
        assert path in seen, f"{label}: {path} never ran"
        assert seen[path] == (2, *shape.dims), f"{label}: {path} ({getattr(info, 'kind', 'residual')})"
    assert tuple(out.shape) == (2, *graph.output.dims)
    assert meta or torch.isfinite(out.float()).all()
    # every child of the top module is a layer or a group of the graph, in order
    assert [n for n, _ in model.named_children()] == list(dict.fromkeys(l.path.split(".")[0] for l in graph.modules()))


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_built_module_matches_the_graph(name):
    assert_module_matches(check(load_spec(SPECS / f"{name}.nnspec")), name)


# Options off their defaults: the shape rules and counts must still agree with PyTorch.
OPTION_CASES = {
    "conv_rect": ("image(3, 17, 23)", ["conv 8 kernel 3x5 stride 2x3 pad 1x2", "relu"]),
    "conv_dilated_grouped": ("image(4, 16, 16)", ["conv 8 kernel 3 dilation 2 groups 2 bias false"]),
    "conv_depthwise": ("image(6, 9, 9)", ["conv 6 kernel 3 groups 6 pad 1", "batchnorm"]),
    "pool_pad_overlap": ("image(2, 13, 13)", ["maxpool kernel 3 stride 2 pad 1", "avgpool kernel 3 stride 1 pad 1",
                                              "avgpool 2"]),
    "gap_dense": ("image(5, 7, 7)", ["global_avgpool", "dense 4", "batchnorm", "prelu", "dense 2"]),
    "image_norms": ("image(4, 5, 5)", ["lrn size 4", "layernorm", "prelu", "maxout 2", "softmax", "dense 3 bias false"]),
    "vector_acts": ("vector(12)", ["leaky_relu 0.2", "elu 0.5", "maxout 3", "sigmoid", "tanh", "dropout 0.9",
                                   "layernorm", "softmax"]),
    "rnn_relu_stack": ("sequence(5, 3)", ["rnn 4 layers 3 activation relu return sequence", "maxout 2", "flatten"]),
    "lstm_bi_stack": ("sequence(6, 5)", ["lstm 7 layers 2 bidirectional", "dense 3"]),
    "gru_bi_seq": ("sequence(4, 2)", ["gru 3 layers 2 bidirectional return sequence", "layernorm",
                                      "leaky_relu", "gru 5"]),
    "tokens": ("tokens(6, 30)", ["embedding 8", "dropout 0.1", "lstm 4 return sequence", "flatten", "dense 2"]),
    "nested_residual": ("image(8, 8, 8)", ["residual outer {", "residual inner {", "conv 8 kernel 3 pad 1", "relu",
                                           "}", "conv 8 kernel 1", "}", "residual project {",
                                           "conv 16 kernel 3 stride 2 pad 1", "}", "relu", "dense 3"]),
    "residual_vector": ("vector(10)", ["residual { ", "dense 10", "tanh", "}", "dense 2"]),
    # odd sizes: a stride-2 body maps 7x9 to 4x5, and so must its 1x1 shortcut
    "residual_project_odd": ("image(4, 7, 9)", ["residual project {", "conv 8 kernel 3 stride 2 pad 1", "batchnorm",
                                                "}", "dense 2"]),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_options_match_pytorch(case):
    inp, lines = OPTION_CASES[case]
    body = "\n".join(f"    {l}" for l in lines)
    graph = check(load_text(f"model M {{\n    input {inp}\n{body}\n}}\nloss mse\n", case))
    assert_module_matches(graph, case)


def test_resnet18_structure():
    """The residual blocks: identity shortcuts in stage 1, 1x1 conv + BN projections in stages 2-4."""
    graph = check(load_spec(SPECS / "resnet18.nnspec"))
    blocks = list(residuals(graph))
    assert len(blocks) == 8
    assert [b.proj for b in blocks] == [False, False, True, False, True, False, True, False]
    assert [b.output.dims for b in blocks[::2]] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    for b in blocks:
        if b.proj:
            conv, bn = graph.find(f"{b.path}.proj"), graph.find(f"{b.path}.proj_bn")
            assert conv.params.kernel == (1, 1) and conv.params.stride == (2, 2) and not conv.params.bias
            assert conv.n_params == b.input.dims[0] * b.output.dims[0]
            assert bn.kind == "batchnorm"
    assert graph.output.dims == (1000,)


def test_resnet18_against_torchvision():
    tv = pytest.importorskip("torchvision")
    import torch

    from nnc.compiler.torch_module import build_model

    ref = tv.models.resnet18()
    assert sum(p.numel() for p in ref.parameters()) == KNOWN_TOTALS["resnet18"]
    graph = check(load_spec(SPECS / "resnet18.nnspec"))
    ours = build_model(graph).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert ref.eval()(x).shape == ours(x).shape
    # the same tensor shapes, in the same order
    assert [tuple(p.shape) for p in ref.parameters()] == [tuple(p.shape) for p in ours.parameters()]


def test_lenet5_against_a_hand_written_module():
    """An independent reference: LeNet-5 written out in torch.nn has the same tensors."""
    from torch import nn

    from nnc.compiler.torch_module import build_model

    ref = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10))
    ours = build_model(check(load_spec(SPECS / "lenet5.nnspec")))
    assert [tuple(p.shape) for p in ref.parameters()] == [tuple(p.shape) for p in ours.parameters()]


def test_alexnet_listing_shapes():
    """The lecture's AlexNet listing: [55x55x96] CONV1, [27x27x96] POOL1, ... [6x6x256] POOL3."""
    graph = check(load_spec(SPECS / "alexnet.nnspec"))
    shapes = {l.name: l.output.listing for l in graph.layers()}
    assert shapes["conv1"] == "55x55x96"
    assert shapes["pool1"] == "27x27x96"
    assert shapes["conv2"] == "27x27x256"
    assert shapes["pool2"] == "13x13x256"
    assert shapes["conv5"] == "13x13x256"
    assert shapes["pool3"] == "6x6x256"
    assert shapes["fc6"] == "4096"


# ---------------------------------------------------------------- docs/language.md examples

DOC = ROOT / "docs" / "language.md"


def _doc_blocks(complete: bool = True) -> list[tuple[int, str]]:
    """(line, text) of every ```nnspec block of the language reference that is a complete spec
    (or, with complete=False, that is only sections: those are checked under a stand-in model)."""
    if not DOC.exists():
        return []
    text = DOC.read_text()
    out = []
    for m in re.finditer(r"^```nnspec[ \t]*\n(.*?)^```", text, re.S | re.M):
        body = m.group(1)
        first = next((ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
        if (first.startswith("nnspec 1") or first.startswith("model")) == complete:
            out.append((text.count("\n", 0, m.start()) + 2, body))
    return out


# the layer names the reference's section fragments mention (fc7, fc8, ...)
STAND_IN = """model StandIn {
    input image(1, 8, 8)
    conv conv1 16 kernel 3 pad 1
    relu
    dense fc7 64
    relu
    dense fc8 10
}
"""


def test_language_reference_has_examples():
    assert DOC.exists()
    assert len(_doc_blocks()) >= 5
    assert len(_doc_blocks(complete=False)) >= 3


@pytest.mark.parametrize("line,body", _doc_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_language_reference_examples_check(line, body):
    graph = check(load_text(body, f"docs/language.md:{line}"))
    assert graph.n_params >= 0


@pytest.mark.parametrize("line,body", _doc_blocks(complete=False), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_language_reference_section_fragments_check(line, body):
    check(load_text(STAND_IN + body, f"docs/language.md:{line}"))


def test_language_reference_covers_every_registry_word():
    """Every layer kind has a row in the layer table; every section's words are documented."""
    from nnc.compiler.layers import LAYERS
    from nnc.compiler.vocab.augment import AUGMENT
    from nnc.compiler.vocab.initializers import INITIALIZERS
    from nnc.compiler.vocab.losses import LOSSES
    from nnc.compiler.vocab.optimizers import OPTIMIZERS
    from nnc.compiler.vocab.preprocess import PREPROCESS
    from nnc.compiler.vocab.schedules import SCHEDULES
    from nnc.compiler.vocab.sources import SOURCES

    text = DOC.read_text()
    rows = set(re.findall(r"^\| `(\w+)`", text, re.M))
    assert set(LAYERS) <= rows, sorted(set(LAYERS) - rows)
    for registry in (INITIALIZERS, LOSSES, OPTIMIZERS, SCHEDULES, SOURCES, PREPROCESS, AUGMENT):
        missing = [w for w in registry if f"`{w}`" not in text]
        assert not missing, missing
    for section in ("init", "loss", "regularize", "optimizer", "schedule", "data", "train"):
        assert f"### {section}" in text


# ---------------------------------------------------------------- every kind on every input

INPUTS = ["image(4, 6, 6)", "vector(6)", "sequence(3, 4)", "tokens(3, 10)"]
MINIMAL = {"conv": "conv 4 kernel 3", "maxpool": "maxpool 2", "avgpool": "avgpool 2", "dense": "dense 3",
           "embedding": "embedding 4", "rnn": "rnn 3", "lstm": "lstm 3 return sequence", "gru": "gru 3 bidirectional"}


def _kind_cases():
    from nnc.compiler.layers import LAYERS

    return [(k, i) for k in LAYERS for i in INPUTS]


@pytest.mark.parametrize("kind,inp", _kind_cases())
def test_what_check_accepts_builds_and_runs(kind, inp):
    """If `nnc check` accepts a layer on an input, the built module runs and gives the inferred
    shape and parameter count; if it refuses, it says so as a spec error (never at build time)."""
    import torch

    from nnc.compiler.torch_module import build_model
    from nnc.diagnostics import NncError

    text = f"model M {{\n    input {inp}\n    {MINIMAL.get(kind, kind)}\n}}\nloss mse\n"
    try:
        graph = check(load_text(text))
    except NncError:
        return
    model = build_model(graph).eval()
    assert sum(p.numel() for p in model.parameters()) == graph.n_params
    with torch.no_grad():
        out = model(_example(graph.input))
        assert tuple(out.shape) == (2, *graph.output.dims)
        assert tuple(model.train()(_example(graph.input)).shape) == (2, *graph.output.dims)


def test_set_overrides_as_the_reference_documents():
    """The `--set` forms of docs/language.md, through load_spec(overrides=...)."""
    spec = load_spec(SPECS / "alexnet.nnspec", ("optimizer.lr=0.02", "train.epochs=5", 'optimizer.lr_mult=(fc8=10)',
                                               "optimizer.decay_mult=(fc8=0)", "loss.label_smoothing=0.1",
                                               "init.weights=gaussian(std=0.02)", "schedule=step(every=5)"))
    assert spec.optimizer.params.lr == 0.02 and spec.optimizer.params.momentum == 0.9
    assert spec.optimizer.lr_mult == {"fc8": 10.0} and spec.optimizer.decay_mult == {"fc8": 0.0}
    assert spec.train.epochs == 5 and spec.train.batch == 128
    assert spec.loss.params.label_smoothing == 0.1
    assert spec.schedule.main.kind == "step" and spec.schedule.main.params.every == 5
    graph = check(spec)
    assert graph.find("fc6").init[0][1].a == 0.02
    # a later lr_mult replaces the earlier table, also one given with the whole section
    spec = load_spec(SPECS / "alexnet.nnspec", ("optimizer=adam(lr=1e-3), lr_mult(fc6=3)", "optimizer.lr_mult=lr_mult(fc7=2)"))
    assert spec.optimizer.kind == "adam" and spec.optimizer.lr_mult == {"fc7": 2.0}


def test_reserved_layer_names_follow_torch():
    """Layer names become module attributes: check refuses the names nn.Module already uses
    (listed torch-free in shapes.py, compared here with the installed torch)."""
    from torch import nn

    from nnc.compiler.checks import MODULE_ATTRIBUTES
    from nnc.diagnostics import NncError

    assert {n for n in dir(nn.Module()) if not n.startswith("__")} <= MODULE_ATTRIBUTES
    for name in ("forward", "train", "eval", "to", "float", "spec_name"):
        with pytest.raises(NncError, match="reserved"):
            check(load_text(f"model M {{\n input vector(4)\n dense {name} 3\n}}\n"))
    for name in ("proj", "proj_bn"):  # inside a residual block, the shortcut's names
        with pytest.raises(NncError, match="reserved inside residual"):
            check(load_text(f"model M {{\n input image(4, 8, 8)\n residual project {{\n"
                            f"  conv {name} 8 kernel 3 stride 2 pad 1\n }}\n dense 3\n}}\n"))
    # elsewhere `proj` is an ordinary name
    assert_module_matches(check(load_text("model M {\n input vector(4)\n dense proj 3\n}\nloss mse\n")), "proj")


def test_a_model_too_big_for_memory_is_a_user_error():
    """`check` accepts any size; building one that cannot be allocated says so, not a torch traceback."""
    from nnc.compiler.torch_module import build_model
    from nnc.diagnostics import NncError

    graph = check(load_text("model Big {\n    input vector(64)\n    dense fc1 3000000000\n    dense 10\n}\n", "big"))
    with pytest.raises(NncError, match=r"Big does not fit in memory: 225,000,000,010 parameters need 838.2 GiB"):
        build_model(graph)
