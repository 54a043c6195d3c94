"""Pretrained weights: `train finetune(from=FILE, map=MAP)` reads another tool's tensors (a PyTorch
state_dict through torch.load(weights_only=True), a plain .safetensors) and renames them with a
name map. The reference modules (tests/torchvision_layouts.py) are torchvision's layouts and
names written out; with their random weights, nnc's model computes their outputs."""

import math
import pickle
from pathlib import Path

import pytest
import torch
from export_cases import nnc_main
from safetensors.torch import save_file
from test_specs import KNOWN_TOTALS
from torchvision_layouts import LAYOUTS

from nnc.compiler import namemap
from nnc.compiler.checks import check
from nnc.compiler.load import load_spec
from nnc.compiler.torch_module import build_model
from nnc.diagnostics import NncError
from nnc.runtime import checkpoint, weights

ROOT = Path(__file__).resolve().parents[1]


def plausible(model, seed=0):
    """Weights of the scale training leaves (std 1/sqrt(fan_in)), batchnorm statistics and affine
    parameters away from 0 and 1: deep nets keep finite, comparable outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(t[0].numel()))
            elif name.endswith(("running_var", ".weight")):
                t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.75)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
    return model.eval()


def spec_with_finetune(tmp_path, name, weights_file, map_):
    """The shipped spec, copied beside the weights, fine-tuning from them."""
    spec = tmp_path / f"{name}.nnspec"
    spec.write_text((ROOT / "specs" / f"{name}.nnspec").read_text())
    return check(load_spec(str(spec), (f'train.finetune=(from="{weights_file}", map={map_})',)))


def test_the_references_are_torchvisions_sizes():
    for name, (build, _) in LAYOUTS.items():
        with torch.device("meta"):
            assert sum(p.numel() for p in build().parameters()) == KNOWN_TOTALS.get(name, 138_357_544), name


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_shipped_map_renames_torchvision_to_the_spec_exactly(name):
    """All of torchvision's tensors, renamed, are the spec's, with the same shapes (meta device)."""
    build, map_ = LAYOUTS[name]
    with torch.device("meta"):
        theirs = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    rules = namemap.load(map_, None)
    renamed = {namemap.rename(rules, k): v for k, v in theirs.items()}
    assert len(renamed) == len(theirs)
    assert renamed == checkpoint.expected_model_shapes(check(load_spec(str(ROOT / "specs" / f"{name}.nnspec"))))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "googlenet", "densenet121", "mobilenet_v2"])
def test_torchvision_weights_give_torchvisions_outputs(name, tmp_path):
    build, map_ = LAYOUTS[name]
    torch.manual_seed(0)
    ref = plausible(build())
    if name == "densenet121":  # a plain .safetensors from another tool
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "w.safetensors")
        file = "w.safetensors"
    else:
        torch.save(ref.state_dict(), tmp_path / "w.pth")
        file = "w.pth"
    graph = spec_with_finetune(tmp_path, name, file, map_)
    model = build_model(graph)
    assert weights.finetune(model, graph) == len(model.state_dict())
    x = torch.randn(2, 3, 64, 64)  # convolutional up to the global pool: any size runs, a small one quickly
    with torch.no_grad():
        want, got = ref(x), model.eval()(x)
    assert got.shape == want.shape == (2, 1000)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_skip_keeps_a_new_head_fresh_and_a_wrong_map_is_an_error(tmp_path):
    build, map_ = LAYOUTS["resnet18"]
    torch.save(plausible(build()).state_dict(), tmp_path / "w.pth")
    spec = tmp_path / "r.nnspec"
    spec.write_text((ROOT / "specs" / "resnet18.nnspec").read_text().replace("dense     fc 1000", "dense     fc 10"))
    graph = check(load_spec(str(spec), ('train.finetune=(from="w.pth", map=torchvision_resnet18, skip=fc)',)))
    model = build_model(graph)
    fresh = model.fc.weight.detach().clone()
    weights.finetune(model, graph)
    assert torch.equal(model.fc.weight, fresh) and model.layer4.basic2.res1.conv2.weight.shape == (512, 512, 3, 3)
    graph = check(load_spec(str(spec), ('train.finetune=(from="w.pth", skip=fc)',)))  # no map: nothing matches
    with pytest.raises(NncError, match=r"do not match this model's: layer1\.0\.conv1\.weight \(from the file\)"):
        weights.finetune(build_model(graph), graph)
    r = nnc_main("check", spec, "--set", 'train.finetune=(from="w.pth", map=torchvision_resnet19)')
    assert r.returncode == 1 and "unknown name map 'torchvision_resnet19'" in r.stderr
    assert "did you mean 'torchvision_resnet18'" in r.stderr


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path):
    boom = _Boom()
    boom.target = str(tmp_path / "ran")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv.weight": boom}, f)
    spec = tmp_path / "s.nnspec"
    spec.write_text("model M {\n    input vector(4)\n    dense fc 2\n}\n"
                    'train finetune(from="evil.pth")\ndata synthetic\n')
    graph = check(load_spec(str(spec)))
    with pytest.raises(NncError, match="not a PyTorch file of tensors nnc can read safely"):
        weights.finetune(build_model(graph), graph)
    assert not (tmp_path / "ran").exists()


def test_train_from_a_foreign_safetensors_with_a_map_file(tmp_path):
    """`nnc train` end to end: another tool's names (encoder.*, head.*), a map file beside the
    spec, a learning rate too small to move the weights: the run starts from them."""
    src = {"encoder.0.weight": torch.randn(8, 64), "encoder.0.bias": torch.randn(8),
           "head.weight": torch.randn(10, 8), "head.bias": torch.randn(10)}
    save_file(src, tmp_path / "other.safetensors")
    (tmp_path / "other.map").write_text("# their names -> ours\nencoder.0 -> hidden\nhead -> out\n")
    (tmp_path / "s.nnspec").write_text(
        "model M {\n    input vector(64)\n    dense hidden 8\n    relu\n    dense out 10\n}\n"
        "optimizer sgd(lr=1e-12)\ndata digits, val 0.1, test 0.1\n"
        'train batch 64, epochs 1, finetune(from="other.safetensors", map="other.map"), monitor_every 0\n')
    r = nnc_main("train", tmp_path / "s.nnspec", "--out", tmp_path / "run", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    got = checkpoint.load(tmp_path / "run" / "last.safetensors").model
    assert torch.allclose(got["hidden.weight"], src["encoder.0.weight"], atol=1e-6)
    assert torch.allclose(got["out.bias"], src["head.bias"], atol=1e-6)
