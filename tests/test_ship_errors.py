"""`nnc export` / `nnc compile` / `nnc eval` on wrong input: each is a one-line
user error (exit 1) or a usage error (exit 2), never a traceback, and the message names the culprit."""

from pathlib import Path

import numpy as np
import pytest
import torch

from export_cases import KINDS, nnc_main, spec_text
from nnc.compiler.onnx_export import max_opset
from nnc.compiler.shapes import check
from nnc.compiler.spec import load_spec, load_text
from nnc.compiler.torch_build import build_model
from nnc.runtime import checkpoint
from test_export import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "specs" / "digits_mlp.nnspec"


def user_error(r, *needles):
    """Exit 1, one `error:` and no traceback; every needle in the message."""
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "error:" in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


# ---------------------------------------------------------------- export / compile


@pytest.mark.parametrize("opset", ["newest+1", "99"])
def test_opset_newer_than_the_runtime(tmp_path, opset):
    opset = str(max_opset() + 1) if opset == "newest+1" else opset
    r = nnc_main("export", MLP, "-o", tmp_path / "m.onnx", "--opset", opset)
    user_error(r, f"--opset {opset}", f"17..{max_opset()}")
    assert not (tmp_path / "m.onnx").exists()


def test_output_paths_that_cannot_be_written(tmp_path):
    r = nnc_main("export", MLP, "-o", tmp_path)
    user_error(r, str(tmp_path), "is a folder")
    r = nnc_main("export", MLP, "-o", "/proc/nnc_test.onnx")
    user_error(r, "/proc/nnc_test.onnx", "cannot write")
    r = nnc_main("compile", MLP, "-o", tmp_path / "no" / "such" / "dir" / "m.py")
    user_error(r, str(tmp_path / "no" / "such" / "dir" / "m.py"), "No such file or directory")
    r = nnc_main("compile", MLP, "-o", tmp_path)
    user_error(r, str(tmp_path), "is a folder")


@pytest.mark.parametrize("command", ["export", "compile"])
def test_set_with_a_checkpoint_is_misuse(tmp_path, command):
    ckpt, *_ = make_checkpoint(tmp_path, "digits_mlp")
    r = nnc_main(command, ckpt, "--set", "bogus=3", "-o", tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--set applies to bare specs" in r.stderr
    assert not (tmp_path / "out").exists()


def _damage(tmp_path, how):
    ckpt, graph, model, stats, classes = make_checkpoint(tmp_path, "digits_cnn")
    ck = checkpoint.load(ckpt)
    weights, pre = dict(ck.model), dict(ck.preprocess)
    if how == "pre_mean":
        pre["mean"] = np.zeros(3, np.float32)
        needle = "pre/mean has shape (3,), but DigitsCNN expects (1, 8, 8)"
    elif how == "missing":
        del weights["fc2.bias"]
        needle = "model/fc2.bias (shape (10,)) is missing"
    else:
        weights["conv1.weight"] = torch.zeros(32, 1, 5, 5)
        needle = "model/conv1.weight has shape (32, 1, 5, 5), but DigitsCNN expects (32, 1, 3, 3)"
    bad = tmp_path / f"{how}.safetensors"
    checkpoint.save(bad, checkpoint.Checkpoint(ck.spec_text, ck.spec_name, weights, pre, ck.classes))
    return bad, needle


@pytest.mark.parametrize("how", ["pre_mean", "missing", "shape"])
def test_damaged_checkpoint_names_the_tensor(tmp_path, how):
    bad, needle = _damage(tmp_path, how)
    for args in (("export", bad, "-o", tmp_path / "m.onnx"), ("compile", bad, "-o", tmp_path / "m.py"),
                 ("eval", bad, "--device", "cpu")):
        r = nnc_main(*args)
        user_error(r, str(bad), needle, "damaged", "another spec")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.py").exists()


def test_checkpoint_check_knows_every_tensor():
    """check_against's meta-device shapes == build_model's state_dict, for every layer kind and spec
    (here: the small ones; the big specs are covered by test_export's and test_compile's runs)."""
    from export_cases import EXTRA

    from nnc.runtime.checkpoint import expected_model_shapes

    graphs = [check(load_text(spec_text(KINDS.get(k) or EXTRA[k]))) for k in sorted(KINDS) + sorted(EXTRA)]
    graphs += [check(load_spec(str(ROOT / "specs" / f"{s}.nnspec"))) for s in ("resnet18", "seq_lstm", "lenet5")]
    for g in graphs:
        want = {k: tuple(v.shape) for k, v in build_model(g).state_dict().items()}
        assert expected_model_shapes(g) == want
