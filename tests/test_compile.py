"""`nnc compile`: standalone PyTorch source that imports only torch, takes nnc's weights with a
strict `load_state_dict`, and computes exactly what the nnc-built module computes."""

import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_cases import EXTRA, KINDS, example, nnc_main, outputs, randomize, spec_text

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec, load_text
from nnc.compiler.python_source import class_name, generate
from nnc.compiler.torch_module import build_model
from nnc.runtime import checkpoint

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.nnspec"))
FORWARD_FLOPS = 3e9  # per example; above it (VGG16) only the structure and the weights are checked


def imports(source: str) -> set[str]:
    """Top-level package of every import statement in `source`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0] if node.level == 0 else ".")
    return names


def load_module(path: Path, name: str):
    """Import a generated file as a fresh module, the way a user's project would."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled_matches(graph, model, tmp_path, forward=True):
    """Generate, import, strict-load `model`'s weights, compare outputs bit for bit."""
    source = generate(graph)
    assert imports(source) == {"torch"}, imports(source)
    assert "nnc" not in {*imports(source)} and "import nnc" not in source
    assert source == generate(graph)  # deterministic
    path = tmp_path / f"gen_{tmp_path.name}.py"
    path.write_text(source)
    mod = load_module(path, path.stem)
    gen_model = getattr(mod, class_name(graph))()
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in gen_model.state_dict().items()} == want
    gen_model.load_state_dict(model.state_dict())  # strict, names unchanged
    gen_model.eval()
    model.eval()
    if forward:
        x = example(graph)
        xs = x if isinstance(x, list) else [x]
        with torch.no_grad():
            a, b = outputs(model(*xs)), outputs(gen_model(*xs))
        assert len(a) == len(b) == len(graph.outputs)
        for u, v in zip(a, b):
            assert u.shape == v.shape and torch.equal(u, v), (u - v).abs().max()
    return source


@pytest.mark.parametrize("case", sorted(KINDS) + sorted(EXTRA))
def test_layer_kind_compiles(case, tmp_path):
    graph = check(load_text(spec_text(KINDS.get(case) or EXTRA[case])))
    compiled_matches(graph, randomize(build_model(graph)), tmp_path)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_compiles(path, tmp_path):
    graph = check(load_spec(str(path)))
    model = build_model(graph)  # already random; randomize() also sets batchnorm statistics
    source = compiled_matches(graph, randomize(model) if graph.n_params < 20_000_000 else model.eval(), tmp_path,
                              forward=graph.flops < FORWARD_FLOPS)
    assert f"class {class_name(graph)}(nn.Module):" in source
    assert f"# (B, {', '.join(map(str, graph.output.dims))})" in source  # shapes as comments


def test_compile_checkpoint_cli(tmp_path):
    """`nnc compile CHECKPOINT -o model.py`; then, in a process where nnc cannot be imported, the
    file runs on the checkpoint's own `model/` tensors (safetensors, no pickle)."""
    spec = ROOT / "specs" / "digits_cnn.nnspec"
    text = spec.read_text()
    graph = check(load_text(text, str(spec)))
    model = randomize(build_model(graph), seed=5)
    ckpt = tmp_path / "cnn.safetensors"
    stats = {"mean": np.full((1, 8, 8), 5, np.float32), "std": np.full((1, 8, 8), 3, np.float32)}  # as trained
    checkpoint.save(ckpt, checkpoint.Checkpoint(text, str(spec), model.state_dict(), stats, None))
    out = tmp_path / "digits_model.py"
    r = nnc_main("compile", ckpt, "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == generate(graph)
    x = example(graph, 4)
    with torch.no_grad():
        want = model(x)
    torch.save(x, tmp_path / "x.pt")  # plain tensors, read back with weights_only
    torch.save(want, tmp_path / "want.pt")
    script = f"""
import sys
sys.modules["nnc"] = None  # any `import nnc` in the generated file would fail
import torch
from safetensors.torch import load_file
sys.path.insert(0, {str(tmp_path)!r})
import digits_model
model = digits_model.{class_name(graph)}()
model.load_state_dict({{k[len("model/"):]: v for k, v in load_file({str(ckpt)!r}).items() if k.startswith("model/")}})
model.eval()
with torch.no_grad():
    got = model(torch.load({str(tmp_path / "x.pt")!r}, weights_only=True))
assert torch.equal(got, torch.load({str(tmp_path / "want.pt")!r}, weights_only=True)), "outputs differ"
print("ok")
"""
    import subprocess

    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_compile_spec_to_stdout_and_errors(tmp_path):
    r = nnc_main("compile", ROOT / "specs" / "seq_lstm.nnspec")
    assert r.returncode == 0, r.stderr
    assert r.stdout == generate(check(load_spec(str(ROOT / "specs" / "seq_lstm.nnspec"))))
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    r = nnc_main("compile", bad, "-o", tmp_path / "m.py")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "checkpoint" in r.stderr
    assert not (tmp_path / "m.py").exists()


@pytest.mark.parametrize("model,blocks,classes", [
    ("Net", ["a_1", "a1"], []),  # (residual blocks were classes A1, A1_2: now containers in one forward)
    ("Res1", [None], []),  # auto-named res1 read Res1, the model: forward recursed forever
    ("Maxout", ["m"], []),  # the model may not take the helper class's name
])
def test_block_class_names_are_unique(tmp_path, model, blocks, classes):
    body = []
    for b in blocks:
        body += [f"residual {b} {{" if b else "residual {", "conv 2 kernel 3 pad 1", "relu", "}"]
    body += ["maxout 2", "flatten", "dense 3"]
    text = spec_text(("image(2, 4, 4)", body)).replace("model Tiny", f"model {model}")
    graph = check(load_text(text))
    source = compiled_matches(graph, randomize(build_model(graph)), tmp_path)
    defined = [line.split("(")[0][len("class "):] for line in source.splitlines() if line.startswith("class ")]
    assert len(defined) == len(set(defined))
    assert [c for c in defined if c not in ("Maxout", class_name(graph))] == classes


def test_the_compiled_maxout_is_the_one_nnc_trains():
    import inspect

    from nnc.compiler import modules
    from nnc.compiler.python_source import MAXOUT

    assert MAXOUT.strip("\n") in inspect.getsource(modules.Maxout)


@pytest.mark.parametrize("name", ["two_layer", "deep_tanh", "seq_lstm", "digits_cnn"])
def test_the_compiled_module_is_initialized_as_the_spec_says(name, tmp_path):
    """Each tensor's distribution (nnc show's per-layer init) holds in a fresh compiled module:
    gaussian(std=1e-4) stays 1e-4 (torch's default would give ~0.01), xavier, orthogonal, zero biases."""
    graph = check(load_spec(str(ROOT / "specs" / f"{name}.nnspec")))
    path = tmp_path / f"init_{name}.py"
    path.write_text(generate(graph))
    torch.manual_seed(0)
    model = getattr(load_module(path, path.stem), class_name(graph))()
    checked = 0
    for layer in graph.layers():
        for tensor, dist, _ in layer.init:
            p = model.get_parameter(f"{layer.path}.{tensor}").detach()
            t = p.double()
            if dist.kind == "constant":
                assert torch.all(p == torch.tensor(dist.a, dtype=p.dtype)), (layer.path, tensor)
            elif dist.kind == "normal" and t.numel() >= 1000:
                assert t.std().item() == pytest.approx(dist.a, rel=0.1) and abs(t.mean().item() - dist.b) < dist.a / 10
            elif dist.kind == "uniform" and t.numel() >= 1000:
                assert dist.a <= t.min().item() and t.max().item() <= dist.b
            elif dist.kind == "orthogonal":
                flat = t.reshape(t.shape[0], -1)
                gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
                assert torch.allclose(gram, dist.a ** 2 * torch.eye(len(gram), dtype=gram.dtype), atol=1e-5)
            else:
                continue
            checked += 1
    assert checked >= 2


def test_nothing_from_a_spec_or_checkpoint_escapes_into_the_source(tmp_path):
    """A file name (or a checkpoint's spec_name) is text inside the docstring, never code."""
    spec = tmp_path / 'a""";print("INJECTED");""" \\ x.nnspec'
    spec.write_text((ROOT / "specs" / "digits_mlp.nnspec").read_text())
    out = tmp_path / "m.py"
    r = nnc_main("compile", spec, "-o", out)
    assert r.returncode == 0, r.stderr
    graph = check(load_spec(str(spec)))
    ckpt = tmp_path / "m.safetensors"
    evil = '/x/b"""\nimport os; os.system("echo INJECTED")\n"""\\.nnspec'
    stats = {"mean": np.zeros(64, np.float32), "std": np.ones(64, np.float32)}
    checkpoint.save(ckpt, checkpoint.Checkpoint(spec.read_text(), evil, build_model(graph).state_dict(), stats))
    r = nnc_main("compile", ckpt, "-o", tmp_path / "c.py")
    assert r.returncode == 0, r.stderr
    import subprocess

    for path in (out, tmp_path / "c.py"):
        tree = ast.parse(path.read_text())
        assert isinstance(tree.body[0].value.value, str)  # the docstring, still one string
        assert not any(isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("print", "exec")
                       for n in ast.walk(tree))
        r = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "INJECTED" not in r.stdout + r.stderr, r.stderr
    assert 'a\\"\\"\\";print(\\"INJECTED\\");\\"\\"\\" \\\\ x.nnspec' in out.read_text()


@pytest.mark.parametrize("model", ["None", "True", "super", "print", "nn"])
def test_keywords_and_builtins_as_names_give_working_source(tmp_path, model):
    """Model, block and layer names that are Python keywords or builtins: valid source that
    still loads nnc's weights and computes the same thing."""
    text = (f"model {model} {{\n input vector(4)\n residual None {{\n  dense 4\n  relu\n }}\n"
            f" residual super {{\n  dense print 4\n }}\n dense True 3\n}}\nloss mse\n")
    graph = check(load_text(text))
    source = compiled_matches(graph, randomize(build_model(graph)), tmp_path)
    assert class_name(graph).isidentifier()
    assert "class None(" not in source and "class super(" not in source
