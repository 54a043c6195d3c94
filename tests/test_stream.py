"""Data streamed from disk against the same data held in memory, the data plan that chooses
between them, unreadable images, separate split folders, the streaming statistics and
augmentation, and the precision settings."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import run_nnc

from nnc.compiler.checks import check
from nnc.compiler.load import load_text
from nnc.diagnostics import NncError
from nnc.runtime import checkpoint
from nnc.runtime.train import train

CONV = """model F {{
    input image(3, 8, 8)
    conv c1 6 kernel 3 pad 1
    relu
    maxpool 2
    dense 3
}}
optimizer adam(lr=3e-3)
data {data}, val 0.2, test 0.2{more}
train batch 16, epochs 2, monitor_every 0{train}
"""


def images(root, n=12, bad=0, size=(10, 12), classes=("a", "b", "c")):
    from PIL import Image

    rng = np.random.default_rng(len(str(root)))
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = (rng.random((*size, 3)) * 100 + 60 * k).astype(np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    for i in range(bad):
        (root / classes[0] / f"broken{i}.png").write_bytes(b"\x89PNG but not really")
    return root


def run(text, out, name="f.nnspec", **kw):
    return train(check(load_text(text, name)), out, device="cpu", quiet=True, callbacks=[], **kw)


def metrics(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same(a, b, out_a, out_b):
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5) and a["test_accuracy"] == b["test_accuracy"]
    for x, y in zip([r for r in metrics(out_a) if "train_loss" in r], [r for r in metrics(out_b) if "train_loss" in r],
                    strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-5)


@pytest.mark.parametrize("augment", ["", ", augment flip crop(pad=2)"])
def test_streamed_images_train_as_images_in_memory(tmp_path, augment):
    """The same images, split, statistics and batches; decoded by a worker process instead of all
    at once. Augmentation draws differ between the paths (device vs per-example hashes), so with it
    the runs are only both sound."""
    folder = images(tmp_path / "imgs")
    text = CONV.format(data=f'imagefolder("{folder}")', more=", preprocess channel_mean normalize" + augment, train="")
    mem = run(text, tmp_path / "mem")
    streamed = run(text.replace("val 0.2", "val 0.2, cache stream, workers 1"), tmp_path / "stream")
    a, b = (checkpoint.load(tmp_path / d / "best.safetensors").preprocess for d in ("mem", "stream"))
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-6)
    np.testing.assert_allclose(a["std"], b["std"], rtol=1e-6)
    if not augment:
        assert_same(streamed, mem, tmp_path / "stream", tmp_path / "mem")
    assert np.isfinite(streamed["test_loss"])


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_memory_mapped_arrays_train_as_arrays_in_memory(tmp_path, kind):
    rng = np.random.default_rng(0)
    x = (rng.random((90, 8, 8, 3)) * 255).astype(np.uint8)  # channels-last uint8: transposed, kept uint8 to the device
    y = np.array(["cat", "dog", "eel"] * 30)
    if kind == "npy":
        np.save(tmp_path / "x.npy", x.astype(np.float32))
        np.save(tmp_path / "y.npy", y)
        data = f'npy(x="{tmp_path / "x.npy"}", y="{tmp_path / "y.npy"}")'
    else:
        np.savez(tmp_path / "d.npz", x=x, y=y)
        data = f'npz("{tmp_path / "d.npz"}")'
    text = CONV.format(data=data, more=", preprocess mean_image normalize", train="")
    mem = run(text, tmp_path / "mem")
    streamed = run(text.replace("val 0.2", "val 0.2, cache stream, workers 2"), tmp_path / "stream")
    assert_same(streamed, mem, tmp_path / "stream", tmp_path / "mem")


def test_compressed_npz_is_read_whole(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", x=np.zeros((30, 3, 8, 8), np.float32), y=np.arange(30) % 3)
    text = CONV.format(data=f'npz("{tmp_path / "c.npz"}")', more="", train="")
    with pytest.raises(NncError, match=r"cache stream: npz data cannot be streamed \(it is compressed"):
        run(text.replace("val 0.2", "val 0.2, cache stream"), tmp_path / "s")
    assert run(text, tmp_path / "m")["test_loss"] is not None  # auto: in memory


def test_the_data_plan_follows_size_and_memory(tmp_path):
    """check and show say which path and why: the decoded size against a quarter of the memory
    (NNC_MEMORY stands in for a smaller machine), or the spec's cache setting."""
    folder = images(tmp_path / "imgs", n=4)
    (tmp_path / "f.nnspec").write_text(CONV.format(data=f'imagefolder("{folder}")', more="", train=""))
    r = run_nnc("check", tmp_path / "f.nnspec")
    assert r.returncode == 0 and "data: in memory (12 images in 3 class folders, 9.0 KiB as float32: within 1/4 of" in r.stdout
    env = {**os.environ, "NNC_MEMORY": "20K"}
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nnc.cli", *map(str, args)], capture_output=True, text=True, env=env)

    r = cli("check", tmp_path / "f.nnspec")
    assert "data: streamed from disk by worker processes (12 images in 3 class folders, 9.0 KiB as float32: " \
           "over 1/4 of the 20.0 KiB set by NNC_MEMORY)" in r.stdout, r.stdout
    r = cli("show", tmp_path / "f.nnspec", "--set", "data.cache=memory", "--json")
    assert json.loads(r.stdout)["data"]["cache"] == "memory"
    r = cli("check", tmp_path / "f.nnspec", "--set", "data.cache=stream")
    assert "cache stream" in r.stdout
    r = run_nnc("check", tmp_path / "f.nnspec", "--set", "data=digits", "--set", "data.cache=stream")
    assert r.returncode == 1 and "cache stream: digits data cannot be streamed" in r.stderr
    r = subprocess.run([sys.executable, "-m", "nnc.cli", "check", tmp_path / "f.nnspec"], capture_output=True,
                       text=True, env={**os.environ, "NNC_MEMORY": "lots"})
    assert "NNC_MEMORY='lots': expected a size like 512M or 4G" in r.stdout + r.stderr


def test_unreadable_images_are_skipped_listed_and_limited(tmp_path):
    """An unreadable file is skipped, named on the screen and in metrics.jsonl; more than max_bad
    of them stop the run (exit 1) before training, on both paths, without a traceback."""
    folder = images(tmp_path / "imgs", n=20, bad=3)  # 3 of 63: in the training split and others
    text = CONV.format(data=f'imagefolder("{folder}")', more=", cache CACHE, workers 1, max_bad 0.05", train="")
    (tmp_path / "s.nnspec").write_text(text.replace("CACHE", "stream"))
    r = run_nnc("train", tmp_path / "s.nnspec", "--out", tmp_path / "stream", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "warning: skipped an unreadable image: " in r.stderr and "broken0.png (not an image Pillow can read)" in r.stderr
    run(text.replace("CACHE", "memory"), tmp_path / "memory")
    for cache in ("stream", "memory"):
        logged = sorted(m["unreadable"].rsplit("/", 1)[1] for m in metrics(tmp_path / cache) if "unreadable" in m)
        assert logged == ["broken0.png", "broken1.png", "broken2.png"], cache
    strict = text.replace("max_bad 0.05", "max_bad 0.03")
    with pytest.raises(NncError, match=r"[23] of 63 images could not be read, more than max_bad 0.03: .*broken"):
        run(strict.replace("CACHE", "stream"), tmp_path / "stream2")
    (tmp_path / "m.nnspec").write_text(strict.replace("CACHE", "memory"))
    r = run_nnc("train", tmp_path / "m.nnspec", "--out", tmp_path / "memory2", "--device", "cpu")
    assert r.returncode == 1 and "3 of 63 images could not be read, more than max_bad 0.03" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_splits_given_as_folders(tmp_path):
    """imagefolder(train=..., val=...): the val split is its folder; test is drawn from train by
    its fraction. A fraction written for a split given as a folder, or a class the training folder
    lacks, is an error."""
    tr, va = images(tmp_path / "train", n=10), images(tmp_path / "val", n=3)
    text = CONV.format(data=f'imagefolder(train="{tr}", val="{va}")', more="", train="").replace("val 0.2, ", "")
    from nnc.runtime.data import load_splits

    splits = load_splits(check(load_text(text)))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 9, 6)
    final = run(text.replace("test 0.2", "test 0.2, cache stream, workers 1"), tmp_path / "run")
    assert final["test_loss"] is not None
    with pytest.raises(NncError, match=r"the val split is the folder imagefolder\(val=...\): a fraction `val` cannot"):
        check(load_text(text.replace("test 0.2", "val 0.1, test 0.2")))
    images(tmp_path / "val", n=1, classes=("zebra",))
    with pytest.raises(NncError, match="class folder\\(s\\) zebra are not in the training folder"):
        load_splits(check(load_text(text)))
    with pytest.raises(NncError, match="give one folder"):
        check(load_text(text.replace(f'train="{tr}", ', "")))


@pytest.mark.parametrize("steps", [["mean_image", "normalize"], ["channel_mean", "normalize"],
                                   ["normalize", "channel_mean"], ["normalize", "mean_image", "normalize"]])
def test_statistics_from_sums_equal_the_direct_ones(steps):
    """The streaming statistics (sums of x and x^2, batch by batch) against each step computed on
    the whole array, as the notes write them."""
    from nnc.compiler.vocab.registry import NoParams
    from nnc.runtime.preprocess import Moments, fit_moments

    x = np.random.default_rng(0).random((300, 3, 4, 5)) * 200 + 30
    m = Moments(x.shape[1:])
    for i in range(0, 300, 64):
        m.add(x[i:i + 64])
    got = fit_moments([(s, NoParams()) for s in steps], m, None)
    mean, std = np.zeros(x.shape[1:]), np.ones(x.shape[1:])
    for s in steps:
        xc = (x - mean) / std
        if s == "mean_image":
            mean = x.mean(0)
        elif s == "channel_mean":
            mean = mean + xc.mean((0, 2, 3))[:, None, None] * std
        else:
            std = std * xc.std((0, 2, 3))[:, None, None]
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(got["std"], std, rtol=1e-6)


def test_pca_of_a_streamed_split_comes_from_a_sample(tmp_path, monkeypatch):
    """Up to PCA_SAMPLE examples; all of them (as in memory) when the split is smaller."""
    from nnc.runtime import preprocess

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", (rng.standard_normal((120, 6)) @ rng.standard_normal((6, 6))).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(120) % 2)
    text = (f'model V {{\n input vector(6)\n dense 2\n}}\ndata npy(x="{tmp_path / "x.npy"}", y="{tmp_path / "y.npy"}"), '
            "preprocess whiten(dims=3)CACHE\ntrain epochs 1\n")
    run(text.replace("CACHE", ""), tmp_path / "mem")
    run(text.replace("CACHE", ", cache stream, workers 0"), tmp_path / "all")
    monkeypatch.setattr(preprocess, "PCA_SAMPLE", 40)
    run(text.replace("CACHE", ", cache stream, workers 0"), tmp_path / "few")
    a, b, c = (checkpoint.load(tmp_path / d / "best.safetensors").preprocess["proj"] for d in ("mem", "all", "few"))
    np.testing.assert_allclose(np.abs(a), np.abs(b), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.abs(a), np.abs(c), atol=1e-3)


def test_augmentation_is_seeded_per_example():
    """The same example in the same epoch draws the same numbers whatever batch it is in (so the
    number of workers and processes does not matter), and other epochs draw others."""
    from nnc.runtime.stream import uniforms

    a = uniforms(3, 1, np.arange(10), 4)
    b = uniforms(3, 1, np.array([7, 2, 9]), 4)
    np.testing.assert_array_equal(a[[7, 2, 9]], b)
    assert not np.allclose(uniforms(3, 2, np.arange(10), 4), a)
    assert 0 <= a.min() and a.max() < 1 and abs(uniforms(0, 0, np.arange(20000), 1).mean() - 0.5) < 0.01


def test_augment_steps_do_what_they_say():
    from nnc.compiler.vocab.augment import AUGMENT, Jitter, ResizedCrop, augment_batch, resized_crop_boxes

    x = torch.rand(4, 3, 6, 8) * 255
    whole = [("random_resized_crop", ResizedCrop(scale=(1.0, 1.0), ratio=(8 / 6, 8 / 6)))]
    torch.testing.assert_close(augment_batch(x, whole, torch.rand(4, 4)), x, atol=1e-3, rtol=1e-4)
    boxes = resized_crop_boxes(torch.rand(1000, 4), torch.full((1000,), 40.0), torch.full((1000,), 30.0), ResizedCrop())
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 1200
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 40 and boxes[:, 3].max() <= 30 and area.min() < 0.2
    still = Jitter(brightness=0.0, contrast=0.0, saturation=0.0)
    torch.testing.assert_close(augment_batch(x, [("color_jitter", still)], torch.rand(4, 3), 255.0), x)
    bright = augment_batch(x, [("color_jitter", Jitter(brightness=0.5, contrast=0, saturation=0))],
                           torch.tensor([[1.0, 0.5, 0.5]] * 4) - 1e-6, 255.0)
    torch.testing.assert_close(bright, (x * 1.5).clamp(0, 255), atol=1e-3, rtol=1e-4)
    flipped = augment_batch(x, [("flip", AUGMENT["flip"].params())], torch.tensor([[0.1], [0.9], [0.1], [0.9]]))
    assert torch.equal(flipped[0], x[0].flip(2)) and torch.equal(flipped[1], x[1])
    with pytest.raises(NncError, match="random_resized_crop comes first in augment"):
        check(load_text(CONV.format(data="synthetic", more=", augment flip random_resized_crop", train="")))


def test_precision_settings_are_shown_and_checked(tmp_path, monkeypatch):
    text = CONV.format(data="synthetic(n=64)", more="", train=", precision PREC, channels_last false")
    (tmp_path / "p.nnspec").write_text(text.replace("PREC", "fp16"))
    r = run_nnc("check", tmp_path / "p.nnspec", "--set", "train.device=cpu")
    assert r.returncode == 1 and "precision fp16 needs a GPU" in r.stderr and "p.nnspec:10:54" in r.stderr
    if not torch.cuda.is_available():
        with pytest.raises(NncError, match="precision fp16 needs a GPU, and this run is on the CPU"):
            run(text.replace("PREC", "fp16"), tmp_path / "fp16")
    r = run_nnc("show", tmp_path / "p.nnspec", "--resolved", "--set", "train.precision=bf16")
    assert "precision bf16, channels_last false, compile false, sync_batchnorm false" in " ".join(r.stdout.split())
    assert run(text.replace("PREC", "bf16"), tmp_path / "bf16")["test_loss"] < 5  # CPU autocast in bfloat16
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)
    run(text.replace("PREC", "fp32").replace("channels_last false", "compile true"), tmp_path / "c")
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)


def test_eval_doctor_and_ensemble_read_streamed_data_as_training_did(tmp_path):
    """`nnc eval` of a run over streamed data scores the test split batch by batch from disk
    and agrees with the run's own test metrics; the doctor trains on a bounded sample of it; an
    ensemble of two such runs is scored and exported from batches read from disk, and an int8
    export is calibrated and judged on examples read the same way."""
    folder = images(tmp_path / "imgs", n=12)
    spec = tmp_path / "s.nnspec"
    spec.write_text(CONV.format(data=f'imagefolder("{folder}")', more=", cache stream, workers 1, preprocess channel_mean",
                                train=""))
    r = run_nnc("train", spec, "--out", tmp_path / "run", "--device", "cpu", "--json", "-q", "--plots", "off")
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout.strip().splitlines()[-1])
    r = run_nnc("eval", tmp_path / "run" / "best.safetensors", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["n"] == 7 and ev["loss"] == pytest.approx(final["test_loss"], rel=1e-5)
    assert ev["accuracy"] == pytest.approx(final["test_accuracy"]) and np.array(ev["confusion"]).sum() == 7
    from nnc.runtime.feeds import training_sample

    graph = check(load_text(spec.read_text(), str(spec)))
    sample = training_sample(graph, limit=10)
    assert sample.x.shape == (10, 3, 8, 8) and sample.y.shape == (10,)
    r = run_nnc("doctor", spec, "--device", "cpu")
    assert r.returncode in (0, 4) and "Traceback" not in r.stderr, r.stderr
    r = run_nnc("train", spec, "--out", tmp_path / "run2", "--device", "cpu", "--seed", "5", "-q", "--plots", "off")
    assert r.returncode == 0, r.stderr
    r = run_nnc("ensemble", tmp_path / "run" / "best.safetensors", tmp_path / "run2" / "best.safetensors", "--json",
                "-o", tmp_path / "ens.onnx")
    assert r.returncode == 0, r.stderr
    ens = json.loads(r.stdout.strip().splitlines()[-1])
    assert ens["n"] == 7 and ens["members"][0]["accuracy"] == pytest.approx(final["test_accuracy"])
    assert (tmp_path / "ens.onnx").is_file()
    r = run_nnc("export", tmp_path / "run" / "best.safetensors", "-o", tmp_path / "q.onnx", "--quantize", "int8",
                "--max-drop", "inf")
    assert r.returncode == 0 and (tmp_path / "q.onnx").is_file(), r.stderr
