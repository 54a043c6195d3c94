"""ONNX export: every layer kind, every spec, checkpoints with preprocessing, and the checks."""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_cases import EXTRA, KINDS, nnc_main, randomize, spec_text
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_rnn import RNN_14

from nnc.compiler.checks import check
from nnc.compiler.layers import LAYERS
from nnc.compiler.load import load_spec, load_text
from nnc.compiler.onnx_graph import emit
from nnc.compiler.torch_module import build_model
from nnc.diagnostics import NncError
from nnc.runtime import checkpoint
from nnc.runtime.export import export, feed, random_inputs, torch_reference, verify
from nnc.runtime.preprocess import apply

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.nnspec"))
SMALL = 2_000_000  # parameters: small enough for the (slow, pure-numpy) reference evaluator
BIG = 100_000_000  # parameters: verified in memory but not written to disk (saves ~4 s of CI)


class LRN(OpRun):
    """onnx.reference's LRN loops over the batch axis where it means the channels (onnx 1.23:
    `for c in range(x.shape[0])`), so it is wrong whenever N != C. The ONNX spec's formula:"""

    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        c1, c2 = (size - 1) // 2, -(-(size - 1) // 2) + 1
        sq = np.zeros_like(x)
        for c in range(x.shape[1]):
            sq[:, c] = np.sum(x[:, max(0, c - c1):min(x.shape[1], c + c2)] ** 2, axis=1)
        return ((x / (bias + alpha / size * sq) ** beta).astype(x.dtype),)


class RNN(RNN_14):
    """onnx.reference's RNN knows only the Tanh and Affine activations; the ONNX spec lists Relu too."""

    op_domain = ""

    def choose_act(self, name, alpha, beta):
        if name in ("Relu", "relu"):
            return lambda x: np.maximum(x, 0)
        return super().choose_act(name, alpha, beta)


class ConvTranspose(OpRun):
    """onnx.reference's ConvTranspose mixes up groups (a reshape error with group 2); the ONNX
    spec's operation written out: every input pixel scatters its (dilated) kernel at its stride."""

    op_domain = ""

    def _run(self, x, w, b=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, output_padding=None,
             output_shape=None, pads=None, strides=None):
        n, c, h, wd = x.shape
        g, (kh, kw) = group or 1, w.shape[2:]
        (sh, sw), (dh, dw), (oph, opw) = strides, dilations, output_padding
        cin, cout = c // g, w.shape[1]
        full = np.zeros((n, g * cout, (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw),
                        x.dtype)
        for gi in range(g):
            xg, wg = x[:, gi * cin:(gi + 1) * cin], w[gi * cin:(gi + 1) * cin]
            for i in range(kh):
                for j in range(kw):
                    full[:, gi * cout:(gi + 1) * cout, i * dh:i * dh + (h - 1) * sh + 1:sh,
                         j * dw:j * dw + (wd - 1) * sw + 1:sw] += np.einsum("nchw,co->nohw", xg, wg[:, :, i, j])
        out = full[:, :, pads[0]:full.shape[2] - pads[2], pads[1]:full.shape[3] - pads[3]]
        return ((out + (b.reshape(1, -1, 1, 1) if b is not None else 0)).astype(x.dtype),)


def reference_error(model_proto, graph, torch_model, stats=None, batch=2):
    """Max relative error of onnx.reference.ReferenceEvaluator against PyTorch."""
    x = random_inputs(graph, stats or {}, batch, seed=7)
    gots = ReferenceEvaluator(model_proto, new_ops=[LRN, RNN, ConvTranspose]).run(None, feed(graph, x))
    wants = torch_reference(torch_model, stats or {}, x, False)
    wants = wants if isinstance(wants, list) else [wants]
    assert [g.shape for g in gots] == [w.shape for w in wants]
    return max(float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-12)) for g, w in zip(gots, wants))


def test_every_kind_has_an_emitter_and_a_case():
    assert [k for k in sorted(LAYERS) if LAYERS[k].onnx is None] == []
    assert [k for k in sorted(LAYERS) if LAYERS[k].python is None and not LAYERS[k].merge] == []
    assert sorted(KINDS) == sorted(LAYERS)


@pytest.mark.parametrize("case", sorted(LAYERS) + sorted(EXTRA))
def test_layer_kind_exports(case):
    graph = check(load_text(spec_text(KINDS.get(case) or EXTRA[case])))
    if case in LAYERS:
        assert case in {l.kind for l in graph.layers()}
    model = randomize(build_model(graph))
    result = export(graph, model, None, None, None)
    assert set(result.check) == {1, 3} and all(r["ok"] and r["scale"] > 0 for r in result.check.values())
    onnx.checker.check_model(result.model)
    assert reference_error(result.model, graph, model) < 1e-4


@pytest.mark.parametrize("case", ["maxout", "lrn", "gru"])
def test_opset_18(case):
    graph = check(load_text(spec_text(KINDS[case])))
    model = randomize(build_model(graph))
    result = export(graph, model, None, None, None, opset=18)
    assert result.model.opset_import[0].version == 18


def test_dropout_and_training_behaviour_stay_out():
    graph = check(load_spec(str(ROOT / "specs" / "digits_cnn.nnspec")))
    ops = {n.op_type for n in emit(graph, build_model(graph).state_dict()).graph.node}
    assert "Dropout" not in ops and "Conv" in ops and "MaxPool" in ops


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_exports(path, tmp_path):
    graph = check(load_spec(str(path)))
    model = build_model(graph).eval()
    out = tmp_path / f"{path.stem}.onnx" if graph.n_params < BIG else None  # VGG16: 550 MB not written
    # the big ImageNet nets (VGG-16, ResNet-50, DenseNet-121, ...): the dynamic batch axis at 1 and 2 examples
    result = export(graph, model, None, None, out, batches=(1, 3) if graph.flops < 4e9 else (1, 2))
    assert all(r["ok"] for r in result.check.values())
    proto = onnx.load(str(out)) if out else result.model
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    if graph.n_params < SMALL:
        assert reference_error(proto, graph, model) < 1e-4


def make_checkpoint(tmp_path, spec="digits_cnn", seed=3):
    """A checkpoint from a built model, random weights, and preprocessing statistics made up here."""
    path = ROOT / "specs" / f"{spec}.nnspec"
    text = path.read_text()
    graph = check(load_text(text, str(path)))
    model = randomize(build_model(graph), seed)
    rng = np.random.default_rng(seed)
    dims = graph.spec.model.input.dims
    stats = {"mean": rng.uniform(2, 6, dims).astype(np.float32), "std": rng.uniform(1, 4, dims).astype(np.float32)}
    classes = [f"digit {i}" for i in range(graph.output.features)]
    ck = checkpoint.Checkpoint(text, str(path), model.state_dict(), stats, classes)
    out = tmp_path / f"{spec}.safetensors"
    checkpoint.save(out, ck)
    return out, graph, model, stats, classes


def test_checkpoint_round_trip_with_preprocessing(tmp_path):
    ckpt, graph, model, stats, classes = make_checkpoint(tmp_path)
    out = tmp_path / "m.onnx"
    r = nnc_main("export", ckpt, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "bare spec" not in r.stderr
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == classes
    assert meta["spec_sha256"] == hashlib.sha256((ROOT / "specs" / "digits_cnn.nnspec").read_bytes()).hexdigest()
    assert meta["input_layout"] == "image(1, 8, 8)" and meta["nnc_version"]
    import onnxruntime as ort

    raw = np.random.default_rng(0).uniform(0, 16, (5, 1, 8, 8)).astype(np.float32)  # digits are 0..16
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": raw})[0]
    with torch.no_grad():
        want = model(apply({k: torch.from_numpy(v) for k, v in stats.items()}, torch.from_numpy(raw))).numpy()
    # Random weights give outputs in the thousands, summed from terms as large, so a small output can
    # carry float32 rounding of ~1e-3 in either runtime (both are that far from a float64 forward
    # pass); per-element rtol would flag that noise. Measure the error against the output scale.
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    with torch.no_grad():  # the preprocessing matters: without it the answer is different
        assert not np.allclose(model(torch.from_numpy(raw)).numpy(), want, atol=1e-3)


def test_probabilities_output(tmp_path):
    ckpt, *_ = make_checkpoint(tmp_path, "digits_mlp")
    out = tmp_path / "p.onnx"
    r = nnc_main("export", ckpt, "-o", out, "--probabilities", "--opset", "18")
    assert r.returncode == 0, r.stderr
    proto = onnx.load(str(out))
    assert proto.graph.output[0].name == "probabilities"
    import onnxruntime as ort

    p = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": np.random.rand(4, 64).astype(np.float32) * 16})[0]
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def test_bare_spec_warns(tmp_path):
    out = tmp_path / "m.onnx"
    r = nnc_main("export", ROOT / "specs" / "digits_mlp.nnspec", "-o", out)
    assert r.returncode == 0 and "bare spec" in r.stderr and out.is_file()


def test_mismatch_fails_with_numbers():
    graph = check(load_text(spec_text(KINDS["dense"])))
    model = randomize(build_model(graph))
    proto = emit(graph, model.state_dict())
    with torch.no_grad():
        model.dense1.bias.add_(0.5) if hasattr(model, "dense1") else next(model.parameters()).add_(0.5)
    with pytest.raises(NncError, match=r"max abs error [0-9.e+-]+, max relative error [0-9.e+-]+"):
        verify(proto, graph, model, {}, False)


def test_tiny_outputs_are_checked_relative_to_their_scale():
    """two_layer's fresh outputs are ~5e-6: a 50% error in its last weight must not pass."""
    graph = check(load_spec(str(ROOT / "specs" / "two_layer.nnspec")))
    model = build_model(graph).eval()
    proto = emit(graph, model.state_dict())
    report = verify(proto, graph, model, {}, False)
    assert max(r["scale"] for r in report.values()) < 1e-4  # the case this is about
    w = next(t for t in proto.graph.initializer if t.name == "fc2.weight")
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * 1.5, w.name))
    with pytest.raises(NncError, match=r"disagrees with PyTorch .* max relative error 0\.[1-9]"):
        verify(proto, graph, model, {}, False)


def test_bare_spec_with_preprocessing_says_it_is_left_out(tmp_path):
    out = tmp_path / "m.onnx"
    r = nnc_main("export", ROOT / "specs" / "digits_cnn.nnspec", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "preprocess channel_mean normalize" in r.stderr and "NOT in this graph" in r.stderr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["preprocessing"].startswith("not in this graph")
    r = nnc_main("export", ROOT / "specs" / "deep_tanh.nnspec", "-o", out)  # no preprocessing: nothing to say
    assert r.returncode == 0 and "preprocess" not in r.stderr


def test_old_opset_is_refused(tmp_path):
    r = nnc_main("export", ROOT / "specs" / "digits_mlp.nnspec", "-o", tmp_path / "m.onnx", "--opset", "13")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "--opset 13 is older than nnc emits" in r.stderr and "choose 17.." in r.stderr


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint(tmp_path, damage):
    ckpt, *_ = make_checkpoint(tmp_path, "digits_mlp")
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint" * 10)
    r = nnc_main("export", ckpt, "-o", tmp_path / "m.onnx")
    assert r.returncode == 1, r.stderr
    assert "checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- a trained model, end to end


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory):
    """digits_cnn trained for 2 epochs by `nnc train`, exported by `nnc export`, and the raw
    (unpreprocessed) test split that `nnc eval` scores, saved as .npy like a user would."""
    from conftest import run_nnc

    d = tmp_path_factory.mktemp("trained_cnn")
    r = run_nnc("train", ROOT / "specs" / "digits_cnn.nnspec", "--epochs", "2", "--out", d / "run", "--device", "cpu",
                "-q")
    assert r.returncode == 0, r.stderr
    ckpt = d / "run" / "best.safetensors"
    r = run_nnc("export", ckpt, "-o", d / "cnn.onnx")
    assert r.returncode == 0, r.stderr
    from nnc.runtime.data import load_splits

    test = load_splits(check(checkpoint.load(ckpt).spec())).test
    np.save(d / "test_x.npy", test.x)
    return d, ckpt, d / "cnn.onnx", test


def test_infer_on_raw_test_split_matches_eval(trained_cnn, nnc_cli):
    d, ckpt, model, test = trained_cnn
    r = nnc_cli("infer", model, d / "test_x.npy", "--json", "--top", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    preds = np.array([p["class"] for p in out["predictions"]])
    assert len(preds) == len(test.y) and all(len(p["top"]) == 3 for p in out["predictions"])
    assert out["predictions"][0]["label"] == str(preds[0])  # the digits' class names are "0".."9"
    r = nnc_main("eval", ckpt, "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["n"] == len(test.y) and ev["accuracy"] > 0.5
    conf = np.zeros((10, 10), int)
    np.add.at(conf, (test.y, preds), 1)
    assert conf.tolist() == ev["confusion"]  # same predictions per true class as `nnc eval`
    assert float((preds == test.y).mean()) == pytest.approx(ev["accuracy"], abs=1e-6)
    from nnc.runtime import artifacts  # and per example, against the checkpoint in torch

    art = artifacts.load(str(ckpt))
    torch_model = art.model("cpu")
    with torch.no_grad():
        stats = {k: torch.from_numpy(np.asarray(v)) for k, v in art.stats.items()}
        want = torch_model(apply(stats, torch.from_numpy(test.x))).argmax(1).numpy()
    assert (preds == want).all()


def test_infer_reads_images_on_the_training_scale(trained_cnn, tmp_path):
    """digits hold pixels 0..16; PNGs of the test digits (x * 255 / 16) must predict what the arrays do."""
    from PIL import Image

    d, _, model, test = trained_cnn
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert meta["pixel_max"] == "16" and meta["data_source"] == "digits"
    n = 80
    for i, x in enumerate(test.x[:n]):
        Image.fromarray(np.round(x.reshape(8, 8) * 255 / 16).astype(np.uint8)).save(tmp_path / f"{i:03d}.png")
    np.save(tmp_path / "x.npy", test.x[:n])
    images, arrays = (nnc_main("infer", model, tmp_path / p, "--json") for p in (".", "x.npy"))
    assert images.returncode == 0 and arrays.returncode == 0, images.stderr + arrays.stderr
    images, arrays = json.loads(images.stdout), json.loads(arrays.stdout)
    assert [p["class"] for p in images["predictions"]] == [p["class"] for p in arrays["predictions"]]
    assert images["image_scale"]["pixel_max"] == 16 and "image_scale" not in arrays
    r = nnc_main("infer", model, tmp_path / "000.png")
    assert r.returncode == 0 and "0..16" in r.stderr


def test_infer_warns_where_the_pixel_scale_is_unknown(tmp_path):
    from PIL import Image

    text = spec_text(("image(1, 4, 4)", ["flatten", "dense 3"])) + 'data npz("nowhere.npz")\n'
    (tmp_path / "s.nnspec").write_text(text)
    assert nnc_main("export", tmp_path / "s.nnspec", "-o", tmp_path / "m.onnx").returncode == 0
    assert {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}["pixel_max"] == "unknown"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    r = nnc_main("infer", tmp_path / "m.onnx", tmp_path / "a.png")
    assert r.returncode == 0 and "warning:" in r.stderr and "does not record the pixel scale" in r.stderr


def test_infer_wrong_shape_is_a_clear_error(trained_cnn):
    d, _, model, _ = trained_cnn
    np.save(d / "bad.npy", np.zeros((3, 7, 7), np.float32))
    r = nnc_main("infer", model, d / "bad.npy")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "(3, 7, 7) does not fit the model's input (1, 8, 8)" in r.stderr


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_infer_corrupt_model(tmp_path, damage):
    graph = check(load_spec(str(ROOT / "specs" / "digits_mlp.nnspec")))
    good = tmp_path / "good.onnx"
    export(graph, build_model(graph), None, None, good)
    bad = tmp_path / "bad.onnx"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage\xff" * 50)
    np.save(tmp_path / "x.npy", np.zeros((2, 64), np.float32))
    r = nnc_main("infer", bad, tmp_path / "x.npy")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not a loadable ONNX model" in r.stderr and "truncated or corrupt" in r.stderr
    r = nnc_main("infer", good, tmp_path / "x.npy", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["predictions"]) == 2


def test_eval_truncated_checkpoint(trained_cnn, tmp_path):
    _, ckpt, _, _ = trained_cnn
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(ckpt.read_bytes()[:-100])
    r = nnc_main("eval", bad)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not a readable safetensors checkpoint" in r.stderr
