"""Training the new constructs for real: the U-Net on the `shapes` segmentation task (per-pixel
cross-entropy, per-pixel accuracy), a model of two inputs and two outputs from an npz of named
arrays with a weighted auxiliary loss, and `nnc doctor` on both."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from export_cases import nnc_main

ROOT = Path(__file__).resolve().parents[1]


def final(run: Path) -> dict:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r["final"] for r in reversed(lines) if "final" in r)


def test_unet_learns_to_segment_shapes(tmp_path):
    """specs/unet.nnspec on fewer examples and epochs than it states (seconds on a CPU): every
    pixel's class, well above the 76% that calling everything background gets."""
    run = tmp_path / "run"
    r = nnc_main("train", ROOT / "specs" / "unet.nnspec", "--out", run, "--device", "cpu", "-q", "--plots", "wait",
                 "--set", "data=shapes(n=300), val 0.1, test 0.2", "--set", "train.epochs=5")
    assert r.returncode == 0, r.stderr
    f = final(run)
    assert f["test_accuracy"] > 0.9, f
    assert (run / "dashboard.png").is_file()
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in recs if r.get("monitor") == "step")  # the monitors watch the layers inside blocks,
    assert {"enc1.conv1", "enc1.relu1", "up2", "dec1.relu2", "scores"} <= set(step["activations"])  # by path
    assert "up2.weight" in step["update_ratio"] and "dec2.conv1.weight" in step["grad_norm"]
    r = nnc_main("eval", run / "best.safetensors", "--json", "--device", "cpu")
    ev = json.loads(r.stdout)
    assert ev["accuracy"] == pytest.approx(f["test_accuracy"]) and np.array(ev["confusion"]).sum() == ev["n"] * 16 * 16
    r = nnc_main("export", run / "best.safetensors", "-o", tmp_path / "unet.onnx")
    assert r.returncode == 0, r.stderr
    out = onnx.load(str(tmp_path / "unet.onnx")).graph.output[0]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 3, 16, 16]


TWO = """\
# an image and a vector of metadata into one head, and an auxiliary head on the image alone
model Two {
    input image image(1, 8, 8)
    input meta vector(4)

    conv c 8 kernel 3 pad 1
    relu
    global_avgpool
    concat with meta
    dense hidden 16
    relu
    dense main 4
    output main
    from c
    global_avgpool
    dense aux 2
    output aux
}
loss      main cross_entropy, aux cross_entropy weight 0.3
optimizer adam(lr=1e-2)
data      npz("two.npz"), val 0.2, test 0.2
train     batch 32, epochs 15, monitor_every 0
"""


def two_npz(path: Path, n: int = 400):
    """main: which of the 4 metadata values is largest; aux: whether the image is bright."""
    rng = np.random.default_rng(0)
    meta = rng.standard_normal((n, 4)).astype(np.float32)
    bright = rng.integers(0, 2, n)
    image = (rng.standard_normal((n, 1, 8, 8)) * 0.3 + bright[:, None, None, None]).astype(np.float32)
    np.savez(path, image=image, meta=meta, main=meta.argmax(1), aux=bright)


def test_two_inputs_and_two_outputs_train_from_named_arrays(tmp_path):
    two_npz(tmp_path / "two.npz")
    (tmp_path / "two.nnspec").write_text(TWO)
    r = nnc_main("train", tmp_path / "two.nnspec", "--out", tmp_path / "run", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    assert final(tmp_path / "run")["test_accuracy"] > 0.7  # of the first output: chance is 0.25
    r = nnc_main("export", tmp_path / "run" / "best.safetensors", "-o", tmp_path / "two.onnx")
    assert r.returncode == 0, r.stderr
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "two.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image", "meta"]
    main, aux = sess.run(None, {"image": np.ones((3, 1, 8, 8), np.float32), "meta": np.eye(4, dtype=np.float32)[:3]})
    assert main.shape == (3, 4) and aux.shape == (3, 2)
    assert (main.argmax(1) == [0, 1, 2]).mean() >= 2 / 3
    r = nnc_main("infer", tmp_path / "two.onnx", tmp_path / "two.npz")
    assert r.returncode == 1 and "reads 2 inputs (image, meta)" in r.stderr


def test_named_arrays_that_are_missing_are_said(tmp_path):
    np.savez(tmp_path / "two.npz", image=np.zeros((10, 1, 8, 8), np.float32), main=np.zeros(10, int))
    (tmp_path / "two.nnspec").write_text(TWO)
    r = nnc_main("train", tmp_path / "two.nnspec", "--out", tmp_path / "run", "--device", "cpu", "-q")
    assert r.returncode == 1 and "no array named 'meta' (it has image, main)" in r.stderr


@pytest.mark.parametrize("spec", ["two", "unet"])
def test_doctor_on_merges_and_several_outputs(spec, tmp_path):
    """The loss at init, the gradient check through concat / from / two weighted losses, and
    overfitting a few examples (the U-Net: every pixel of them; its gradient check is left out:
    with thousands of ReLUs after batchnorm, centered differences cross a kink now and then)."""
    if spec == "two":
        two_npz(tmp_path / "two.npz")
        (tmp_path / "two.nnspec").write_text(TWO)
        path, checks, data = tmp_path / "two.nnspec", "init,grad,overfit", "train.batch=32"
    else:
        path, checks, data = ROOT / "specs" / "unet.nnspec", "init,overfit", "data=shapes(n=60)"
    r = nnc_main("doctor", path, "--checks", checks, "--json", "--budget", "20", "--set", data)
    got = json.loads(r.stdout)["checks"]
    assert len(got) == len(checks.split(",")) and all(c["passed"] for c in got), [c["summary"] for c in got]
