"""`nnc export` / `nnc compile` / `nnc eval` / `nnc infer` on wrong input: each is a one-line
user error (exit 1) or a usage error (exit 2), never a traceback, and the message names the culprit."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_cases import KINDS, nnc_main, randomize, spec_text
from onnx import TensorProto, helper, numpy_helper
from test_export import make_checkpoint

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec, load_text
from nnc.compiler.torch_module import build_model
from nnc.runtime import checkpoint
from nnc.runtime.export import export, max_opset

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "specs" / "digits_mlp.nnspec"


def user_error(r, *needles):
    """Exit 1, one `error:` and no traceback; every needle in the message."""
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "error:" in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    """digits_mlp (vector(64)) with random weights, exported: what the array checks need."""
    d = tmp_path_factory.mktemp("mlp")
    graph = check(load_spec(str(MLP)))
    export(graph, build_model(graph), None, None, d / "mlp.onnx")
    return d / "mlp.onnx"


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


def test_non_finite_weights_are_a_damaged_checkpoint(tmp_path):
    ckpt, *_ = make_checkpoint(tmp_path, "digits_mlp")
    ck = checkpoint.load(ckpt)
    weights = dict(ck.model)
    weights["fc2.weight"] = weights["fc2.weight"].clone()
    weights["fc2.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    checkpoint.save(bad, checkpoint.Checkpoint(ck.spec_text, ck.spec_name, weights, ck.preprocess, ck.classes))
    for args in (("eval", bad, "--device", "cpu"), ("export", bad, "-o", tmp_path / "m.onnx"),
                 ("compile", bad, "-o", tmp_path / "m.py"), ("ensemble", ckpt, bad)):
        user_error(nnc_main(*args), str(bad), "model/fc2.weight holds NaN or infinite values; the checkpoint is damaged")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.py").exists()


def test_a_file_of_the_other_kind_is_named(mlp_onnx, tmp_path):
    """An ONNX model where a checkpoint goes, a checkpoint or an ONNX model where a spec goes."""
    ckpt, *_ = make_checkpoint(tmp_path, "digits_mlp")
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(mlp_onnx.read_bytes())
    for f in (mlp_onnx, renamed):
        for command in ("eval", "export", "compile"):
            user_error(nnc_main(command, f), "this is an ONNX model, not a checkpoint")
    user_error(nnc_main("check", ckpt), "this is an nnc checkpoint, not a spec")
    user_error(nnc_main("doctor", mlp_onnx), "this is an ONNX model, not a spec")


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


# ---------------------------------------------------------------- infer: arguments and arrays


@pytest.mark.parametrize("option", [("--batch", "0"), ("--batch", "-1"), ("--top", "0"), ("--top", "-3"),
                                    ("--top", "two")])
def test_infer_counts_must_be_positive(mlp_onnx, tmp_path, option):
    r = nnc_main("infer", mlp_onnx, tmp_path / "x.npy", *option)
    assert r.returncode == 2 and option[0] in r.stderr and "Traceback" not in r.stderr


def test_infer_empty_and_non_finite_arrays(mlp_onnx, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 64), np.float32))
    user_error(nnc_main("infer", mlp_onnx, tmp_path / "empty.npy"), "no examples in", "empty.npy", "(0, 64)")
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones((4, 64), np.float32)
        x[2, 7] = bad
        np.save(tmp_path / "bad.npy", x)
        r = nnc_main("infer", mlp_onnx, tmp_path / "bad.npy", "--json")
        user_error(r, "bad.npy", "NaN or infinite", "example 2")
        assert r.stdout == ""
    np.save(tmp_path / "words.npy", np.array([["a"] * 64]))
    user_error(nnc_main("infer", mlp_onnx, tmp_path / "words.npy"), "words.npy", "not numbers")


def test_infer_token_ids(tmp_path):
    graph = check(load_text(spec_text(KINDS["embedding"])))  # tokens(5, 11)
    model = tmp_path / "tok.onnx"
    export(graph, randomize(build_model(graph)), None, None, model)
    assert {p.key: p.value for p in onnx.load(str(model)).metadata_props}["vocab"] == "11"
    cases = {"negative": ([0, 1, -1, 2, 3], "found -1..3"), "too_big": ([0, 1, 11, 2, 3], "found 0..11"),
             "fraction": ([0, 1, 2.5, 2, 3], "example 0 has a fraction")}
    for name, (ids, needle) in cases.items():
        np.save(tmp_path / f"{name}.npy", np.array([ids]))
        user_error(nnc_main("infer", model, tmp_path / f"{name}.npy"), f"{name}.npy", "[0, 11)", needle)
    np.save(tmp_path / "ok.npy", np.array([[0, 1, 10, 2, 3], [4, 5, 6, 7, 8]], np.float64))  # whole floats are fine
    r = nnc_main("infer", model, tmp_path / "ok.npy", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["predictions"]) == 2


def test_infer_grey_images_without_channel_axis(tmp_path):
    """(N, H, W), as sklearn's digits.images, for an image(1, H, W) input; other shapes still refused."""
    graph = check(load_spec(str(ROOT / "specs" / "digits_cnn.nnspec")))
    model = tmp_path / "cnn.onnx"
    export(graph, randomize(build_model(graph)), None, None, model)
    x = np.random.default_rng(0).uniform(0, 16, (5, 8, 8)).astype(np.float32)
    np.save(tmp_path / "nhw.npy", x)
    np.save(tmp_path / "nchw.npy", x[:, None])
    a, b = (nnc_main("infer", model, tmp_path / f, "--json", "--top", "3") for f in ("nhw.npy", "nchw.npy"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    pa, pb = (json.loads(r.stdout)["predictions"] for r in (a, b))
    assert [p["top"] for p in pa] == [p["top"] for p in pb] and len(pa) == 5
    np.save(tmp_path / "odd.npy", x[:, :7])
    user_error(nnc_main("infer", model, tmp_path / "odd.npy"), "(5, 7, 8) does not fit the model's input (1, 8, 8)")


def test_infer_foreign_model_with_named_dims(tmp_path):
    """A model not made by nnc whose input is ['N', 'D']: the named axis is not checked by nnc."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "foreign",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "D"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    onnx.save(m, str(tmp_path / "f.onnx"))
    np.save(tmp_path / "x.npy", np.eye(4, dtype=np.float32)[:2])
    r = nnc_main("infer", tmp_path / "f.onnx", tmp_path / "x.npy", "--json")
    assert r.returncode == 0, r.stderr
    assert [p["class"] for p in json.loads(r.stdout)["predictions"]] == [2, 2]
    np.save(tmp_path / "x5.npy", np.ones((2, 5), np.float32))  # onnxruntime's own check, as a user error
    user_error(nnc_main("infer", tmp_path / "f.onnx", tmp_path / "x5.npy"), "onnxruntime failed")


def test_provider_cuda_without_cuda_prints_only_nnc(mlp_onnx, tmp_path):
    """onnxruntime-gpu without its CUDA libraries logs a red line of its own before nnc's error:
    only nnc's line may show (a subprocess: onnxruntime logs to the C-level stderr)."""
    from conftest import run_nnc

    np.save(tmp_path / "x.npy", np.zeros((2, 64), np.float32))
    r = run_nnc("infer", mlp_onnx, tmp_path / "x.npy", "--provider", "cuda")
    if r.returncode == 0:  # a machine where CUDA works
        return
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith("nnc: error: --provider cuda")


def test_16_bit_grey_images_read_like_their_8_bit_copy(tmp_path):
    """A 16-bit PNG is scaled to 0..255 by its full range, not clipped at 255 (Pillow's convert("L"))."""
    from PIL import Image

    from nnc.compiler.vocab.sources import load_image

    v = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint16)
    Image.fromarray(v.astype(np.uint8)).save(tmp_path / "g8.png")
    Image.fromarray(v * 257).save(tmp_path / "g16.png")  # 0..255 -> 0..65535
    with Image.open(tmp_path / "g16.png") as im16, Image.open(tmp_path / "g8.png") as im8:
        assert im16.mode != im8.mode  # a real 16-bit file
        for c in (1, 3):
            np.testing.assert_allclose(load_image(im16, c, 8, 8), load_image(im8, c, 8, 8), atol=1e-3)
