"""`nnc train` / `nnc eval` end to end on real (small) data, driven through the real CLI."""

import json
import os
import re

import numpy as np
import pytest
import torch
from conftest import SPECS, run_nnc

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec, load_text
from nnc.diagnostics import NncError
from nnc.runtime import checkpoint
from nnc.runtime.data import load_splits
from nnc.runtime.train import train

MLP = """
model M {{
    input vector(64)
    dense fc1 32
    relu
    {extra}
    dense fc2 10
}}
optimizer adam(lr=3e-3)
data digits, val 0.15, test 0.15{data}
train batch 64, epochs {epochs}{train}
"""


def mlp(tmp_path, extra="", data=", preprocess mean_image normalize", epochs=3, train_="", reg=""):
    text = MLP.format(extra=extra, data=data, epochs=epochs, train=train_) + reg
    path = tmp_path / "m.nnspec"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,target", [("digits_cnn", 0.98), ("digits_mlp", 0.97)])
def test_readme_specs_reach_their_accuracy(tmp_path, name, target):
    r = run_nnc("train", SPECS / f"{name}.nnspec", "--out", tmp_path / "run", "--json", "--plots", "wait")
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout.strip().splitlines()[-1])
    assert final["test_accuracy"] >= target
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "train_loss" in r]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr", "samples_per_s"} <= set(epochs[0])
    assert "final" in rows[-1]
    # nnc eval on the best checkpoint reports the same test accuracy
    ev = run_nnc("eval", tmp_path / "run" / "best.safetensors", "--json")
    assert ev.returncode == 0, ev.stderr
    got = json.loads(ev.stdout)
    assert got["accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-6)
    assert np.array(got["confusion"]).sum() == got["n"] == len(got["predictions"])


@pytest.mark.parametrize("ema, optimizer", [("", None), (", ema 0.9", None), ("", "lbfgs(lr=0.5)")],
                         ids=["plain", "ema", "lbfgs"])
def test_kill_and_resume_ends_like_an_uninterrupted_run(tmp_path, ema, optimizer):
    path = mlp(tmp_path, extra="dropout 0.3", epochs=4, train_=", monitor_every 1" + ema,
               reg="\nschedule cosine\nregularize l2 1e-3\n" + (f"optimizer {optimizer}\n" if optimizer else ""))
    if optimizer:  # a second optimizer line would be an error: replace the template's
        path.write_text(path.read_text().replace("optimizer adam(lr=3e-3)\n", "", 1))
    graph = check(load_spec(str(path)))
    full = train(graph, tmp_path / "full", device="cpu", quiet=True)
    kill_at = 0 if optimizer else 3  # L-BFGS takes one (full-batch) step per epoch

    class Kill:  # dies in the third epoch, like a SIGKILL after the epoch-2 checkpoint
        seen = 0

        def start(self, run): pass
        def before_step(self, run): pass
        def epoch_end(self, run, rec): pass
        def end(self, run): pass

        def after_step(self, run):
            if run.epoch == 2:
                if self.seen == kill_at:
                    raise KeyboardInterrupt
                self.seen += 1

    with pytest.raises(KeyboardInterrupt):
        train(graph, tmp_path / "cut", device="cpu", quiet=True, callbacks=[Kill()])
    assert checkpoint.load(tmp_path / "cut" / "last.safetensors").info["epoch"] == 2
    r = run_nnc("train", "--resume", tmp_path / "cut", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    resumed = json.loads(r.stdout.strip().splitlines()[-1])
    assert resumed["test_loss"] == pytest.approx(full["test_loss"], rel=1e-6)
    assert resumed["test_accuracy"] == full["test_accuracy"]

    def epochs(d):
        return [json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines() if '"train_loss"' in l]
    a, b = epochs("full"), epochs("cut")
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-6)


def test_the_split_follows_data_seed_not_train_seed(tmp_path):
    """Runs that differ only in `train seed` (an ensemble of initializations) share their test
    split; `data seed` changes it."""
    def test_x(*overrides):
        return load_splits(check(load_spec(str(mlp(tmp_path)), overrides))).test.x

    base = test_x()
    np.testing.assert_array_equal(test_x("train.seed=7"), base)
    assert not np.array_equal(test_x("data.seed=7"), base)


def test_preprocessing_statistics_come_from_the_training_split_only(tmp_path):
    path = mlp(tmp_path, epochs=1)
    graph = check(load_spec(str(path)))
    train(graph, tmp_path / "run", device="cpu", quiet=True)
    ck = checkpoint.load(tmp_path / "run" / "best.safetensors")
    splits = load_splits(graph)
    np.testing.assert_allclose(ck.preprocess["mean"], splits.train.x.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ck.preprocess["std"], np.where(splits.train.x.std(0) > 1e-8, splits.train.x.std(0), 1),
                               rtol=1e-4, atol=1e-5)
    everything = np.concatenate([splits.train.x, splits.val.x, splits.test.x])
    assert not np.allclose(ck.preprocess["mean"], everything.mean(0), atol=1e-4)


def test_max_norm_holds_after_every_update(tmp_path):
    path = mlp(tmp_path, epochs=1, reg="regularize max_norm 0.5\n")
    train(check(load_spec(str(path))), tmp_path / "run", device="cpu", quiet=True)
    ck = checkpoint.load(tmp_path / "run" / "last.safetensors")
    for name in ("fc1.weight", "fc2.weight"):
        assert ck.model[name].norm(dim=1).max() <= 0.5 + 1e-5


def test_finetune_freezes_and_skips_layers(tmp_path):
    base = mlp(tmp_path, epochs=1)
    train(check(load_spec(str(base))), tmp_path / "base", device="cpu", quiet=True)
    src = checkpoint.load(tmp_path / "base" / "best.safetensors").model
    text = base.read_text().replace("train batch 64", f'train finetune(from="{tmp_path / "base" / "best.safetensors"}", '
                                                         f"skip=fc2), freeze fc1, batch 64")
    text += "optimizer_placeholder"
    text = text.replace("optimizer_placeholder", "")
    (tmp_path / "ft.nnspec").write_text(text.replace("optimizer adam(lr=3e-3)",
                                                     "optimizer adam(lr=3e-3), lr_mult(fc2=10)"))
    graph = check(load_spec(str(tmp_path / "ft.nnspec")))
    train(graph, tmp_path / "ft", device="cpu", quiet=True)
    got = checkpoint.load(tmp_path / "ft" / "best.safetensors").model
    assert torch.equal(got["fc1.weight"], src["fc1.weight"])  # loaded and frozen
    assert not torch.equal(got["fc2.weight"], src["fc2.weight"])  # re-initialized and trained


@pytest.mark.parametrize("data,message", [
    ('npz("missing.npz")', "does not exist"),
    ("synthetic(n=64, classes=12)", "the data has 12 classes, but the last layer has 10 outputs"),
])
def test_bad_data_stops_before_training(tmp_path, data, message):
    path = mlp(tmp_path, data="").with_name("bad.nnspec")
    path.write_text(MLP.format(extra="", data="", epochs=1, train="").replace("data digits", f"data {data}"))
    r = run_nnc("train", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_data_shape_and_class_count_mismatch(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 3)
    np.savez(tmp_path / "s.npz", x=x.reshape(40, 25)[:, :8], y=np.array(["a", "b", "c", "d"] * 10))
    np.savez(tmp_path / "l.npz", x=x.reshape(40, 25)[:, :8], y=np.arange(40) % 5)
    for fname, message in (("d.npz", "but the model's input is vector(8)"), ("s.npz", "the data has 4 classes"),
                           ("l.npz", "the data has labels 0..4 (5 classes), but the last layer has 3 outputs")):
        text = f'model M {{\n input vector(8)\n dense 3\n}}\ndata npz("{tmp_path / fname}")\ntrain epochs 1\n'
        (tmp_path / "x.nnspec").write_text(text)
        r = run_nnc("train", tmp_path / "x.nnspec", "--out", tmp_path / "run")
        assert r.returncode == 1, r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr
        assert "x.nnspec:5:1" in r.stderr  # points at the data section


def _csv_spec(tmp_path, text: str, name="t.csv", source="csv") -> str:
    (tmp_path / name).write_bytes(text) if isinstance(text, bytes) else (tmp_path / name).write_text(text)
    return f'{source}("{tmp_path / name}")'


@pytest.mark.parametrize("make, message", [
    (lambda d: _csv_spec(d, b"", "e.npz", "npz"), "e.npz: empty file; expected a .npz written by numpy.savez"),
    (lambda d: _csv_spec(d, b"not numbers at all", "g.npz", "npz"), "g.npz: cannot read as .npz (not a numpy file)"),
    (lambda d: (np.save(d / "a.npy", np.zeros((4, 2))), f'npz("{d / "a.npy"}")')[1], "a.npy: this is a .npy file, not a .npz"),
    (lambda d: (np.savez(d / "a.npz", x=np.zeros(2)), f'npy(x="{d / "a.npz"}", y="{d / "a.npz"}")')[1],
     "a.npz: this is a .npz file, not a .npy"),
    (lambda d: ((d / "f.npz").mkdir(), f'npz("{d / "f.npz"}")')[1], "f.npz' is a folder; give the file inside it"),
    (lambda d: _csv_spec(d, bytes(range(256))), "t.csv: not a text file"),
    (lambda d: _csv_spec(d, "a,b,c\n\n1,2,0\n1,0\n"), "t.csv: line 4 has 2 columns, the header has 3"),
    (lambda d: _csv_spec(d, "a,b,c\n1,2,0\n").replace(")", ", label=3)"),
     "label column 3 is out of range: the file has 3 columns (0 to 2, or -1 for the last)"),
    (lambda d: _csv_spec(d, "a,b,c\n1,2,0\n").replace(")", ", label=1.5)"),
     "csv: label must be a column name (a string) or a column index (a whole number), got 1.5"),
])
def test_unreadable_data_files_are_named_for_what_is_wrong(tmp_path, make, message):
    """Each of these once escaped as a Python error (EOFError, AttributeError, IndexError,
    UnicodeDecodeError) or a misleading one ("does not exist", "allow_pickle")."""
    data = make(tmp_path)
    with pytest.raises(NncError) as e:
        load_splits(check(load_text(f"model M {{\n input vector(2)\n dense 2\n}}\ndata {data}\n")))
    assert message in str(e.value)
    assert "pickle" not in str(e.value)


def test_a_data_error_of_a_set_source_names_the_set(tmp_path):
    data = _csv_spec(tmp_path, "a,b,c\n" + "1,2,0\n" * 10)
    spec = load_text("model M {\n input vector(5)\n dense 2\n}\ndata digits\n", overrides=(f"data={data}",))
    with pytest.raises(NncError, match="the data's examples have shape") as e:
        load_splits(check(spec))
    assert e.value.diagnostics[0].span.origin == f"--set data={data}"


def test_a_run_without_a_test_split(tmp_path):
    path = mlp(tmp_path, epochs=1)
    path.write_text(path.read_text().replace("test 0.15", "test 0"))
    r = run_nnc("train", path, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "no test split (data test 0)" in r.stdout
    r = run_nnc("eval", tmp_path / "run" / "best.safetensors")
    assert r.returncode == 1
    assert "this run has no test split (its spec says data test 0); it has val, train: e.g. --split val" in r.stderr
    r = run_nnc("eval", tmp_path / "run" / "best.safetensors", "--split", "val", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["n"] == round(0.15 * 1797)


def test_runs_never_land_on_each_other(tmp_path):
    """The default run directory counts up (runs/m, runs/m-2); an --out that holds a run, or is a
    file, is refused before any work; --resume takes the directory or its last.safetensors, and
    --epochs must extend the run."""
    path = mlp(tmp_path, epochs=1)
    for want in ("runs/m", "runs/m-2"):
        r = run_nnc("train", path, "-q", cwd=tmp_path)
        assert r.returncode == 0 and f"best checkpoint: {want}/best.safetensors" in r.stdout, r.stderr
    ck = tmp_path / "runs" / "m" / "last.safetensors"
    before = ck.read_bytes()
    r = run_nnc("train", path, "--out", "runs/m", cwd=tmp_path)
    assert r.returncode == 2 and "--out runs/m holds a run already: continue it with `nnc train --resume runs/m`" in r.stderr
    assert ck.read_bytes() == before
    r = run_nnc("train", path, "--out", path, cwd=tmp_path)
    assert r.returncode == 2 and "a file, not a folder" in r.stderr
    r = run_nnc("train", "--resume", ck, "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 2 and "is at epoch 1 already; --epochs 1 would not extend it" in r.stderr
    for epochs in (2, 3):
        r = run_nnc("train", "--resume", ck if epochs == 2 else ck.parent, "--epochs", epochs, "-q", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert (ck.parent / "spec.nnspec").read_text().startswith("# nnc train applied: --set train.epochs=3 (")
    umask = os.umask(0)
    os.umask(umask)
    assert ck.stat().st_mode & 0o777 == 0o666 & ~umask  # like the run's other files, not mkstemp's 0600
    r = run_nnc("train", path, "--out", "/proc/nnc-cannot", cwd=tmp_path)
    assert r.returncode == 1 and "cannot create the run directory /proc/nnc-cannot" in r.stderr


def _run_on(tmp_path, x, y, model, loss="cross_entropy", name="x") -> dict:
    """Train one epoch in-process on arrays saved as npz (the CLI's error path is tested above)."""
    np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    text = f'model M {{\n input {model}\n dense 3\n}}\nloss {loss}\ndata npz("{tmp_path / name}.npz")\ntrain epochs 1\n'
    return train(check(load_text(text, f"{name}.nnspec")), tmp_path / f"run_{name}", device="cpu", quiet=True,
                 callbacks=[])


@pytest.mark.parametrize("layout", ["chw", "hwc", "flat"])
def test_image_arrays_in_any_common_layout_train_alike(tmp_path, layout):
    """Channels-last arrays (as image files and most image libraries store them) are transposed,
    flat rows reshaped: each reaches the model as the same (C, H, W) example."""
    rng = np.random.default_rng(0)
    chw = rng.standard_normal((60, 3, 4, 5)).astype(np.float32)
    y = np.arange(60) % 3
    x = {"chw": chw, "hwc": chw.transpose(0, 2, 3, 1), "flat": chw.reshape(60, -1)}[layout]
    got = _run_on(tmp_path, x, y, "image(3, 4, 5)")
    ref = _run_on(tmp_path, chw, y, "image(3, 4, 5)", name="ref")
    assert got["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-5)


@pytest.mark.parametrize("case, message", [
    ("scrambled", "not the layout of the model's input image(3, 4, 5)"),
    ("labels_2d", "needs one integer class label per example"),
    ("mse_on_labels", "mse needs 3 target value(s) per example (the last layer's outputs), the data has one integer label"),
])
def test_data_that_would_train_wrongly_is_refused(tmp_path, case, message):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3, 4, 5)).astype(np.float32)
    y = np.arange(60) % 3
    x, loss = {"scrambled": (x.transpose(0, 2, 1, 3), "cross_entropy"),  # 60 values in an order no layout explains
               "labels_2d": (x, "cross_entropy"), "mse_on_labels": (x, "mse")}[case]
    with pytest.raises(NncError, match=re.escape(message)):
        _run_on(tmp_path, x, np.eye(3)[y] if case == "labels_2d" else y, "image(3, 4, 5)", loss=loss)


def test_a_column_of_labels_is_read_as_labels(tmp_path):
    x = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    assert _run_on(tmp_path, x, (np.arange(60) % 3)[:, None], "vector(8)")["test_accuracy"] is not None


def test_imagefolder_skips_other_files_and_refuses_empty_classes(tmp_path):
    from PIL import Image

    for cls in ("a", "b", "c"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
        (tmp_path / "imgs" / cls / "README.txt").write_text("not an image")
    spec = tmp_path / "f.nnspec"
    spec.write_text(f'model M {{\n input image(1, 6, 6)\n dense 3\n}}\ndata imagefolder("{tmp_path / "imgs"}")\n'
                    "train epochs 1\n")
    r = run_nnc("train", spec, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    for f in (tmp_path / "imgs" / "c").glob("*.png"):
        f.unlink()
    r = run_nnc("train", spec, "--out", tmp_path / "run2")
    assert r.returncode == 1 and "no images in c" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_set_overrides_are_validated(tmp_path):
    path = mlp(tmp_path, epochs=1)
    r = run_nnc("train", path, "--set", "optimizer.lr=-1", "--out", tmp_path / "run")
    assert r.returncode == 1 and "lr must be > 0" in r.stderr
    spec = load_spec(str(path), ("optimizer.lr=0.5", "train.epochs=7"))
    assert spec.optimizer.params.lr == 0.5 and spec.train.epochs == 7


def test_search_ranges_need_nnc_search(tmp_path):
    path = tmp_path / "r.nnspec"
    path.write_text("model M {\n input vector(64)\n dense 10\n}\noptimizer sgd(lr=loguniform(1e-4, 1e-1))\n")
    r = run_nnc("train", path, "--out", tmp_path / "run")
    assert r.returncode == 1 and "nnc search" in r.stderr and "r.nnspec:5:18" in r.stderr


def test_sources_npz_csv_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((10, 12, 3)) * 255).astype(np.uint8)).save(tmp_path / "img" / c / f"{i}.png")
    rows = "\n".join(f"{a:.3f},{b:.3f},{int(a > b)}" for a, b in rng.random((30, 2)))
    (tmp_path / "t.csv").write_text("a,b,label\n" + rows + "\n")
    cases = [(f'imagefolder("{tmp_path / "img"}")', "image(3, 8, 8)", 2),
             (f'csv("{tmp_path / "t.csv"}", label=label)', "vector(2)", 2)]
    for data, inp, classes in cases:
        spec = load_text(f"model M {{\n input {inp}\n dense {classes}\n}}\ndata {data}, val 0.2, test 0.2\n")
        splits = load_splits(check(spec))
        n = len(splits.train) + len(splits.val) + len(splits.test)
        assert n in (12, 30) and splits.train.x.shape[1:] == check(spec).input.dims
        assert set(np.unique(np.concatenate([splits.train.y, splits.val.y, splits.test.y]))) == {0, 1}
    spec = load_text(f'model M {{\n input vector(2)\n dense 2\n}}\ndata imagefolder("{tmp_path / "nope"}")\n')
    with pytest.raises(Exception, match="does not exist"):
        load_splits(check(spec))


def test_dropout_is_inverted_and_off_in_eval():
    from nnc import build_model

    spec = load_text("model M {\n input vector(1000)\n dropout 0.5\n}\nloss mse\n")
    model = build_model(spec)
    x = torch.ones(200, 1000)
    model.train()
    y = model(x)
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}  # kept units are scaled by 1/(1-p) during training
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    model.eval()
    assert torch.equal(model(x), x)  # nothing to rescale at test time


def test_svm_loss_is_the_notes_hinge():
    from nnc.compiler.vocab.losses import svm_loss

    s = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    y = torch.tensor([0, 1, 2])
    # the notes' worked example: L = (2.9 + 0 + 12.9) / 3
    assert svm_loss(s, y).item() == pytest.approx((2.9 + 0 + 12.9) / 3, rel=1e-5)


def test_l2_excludes_biases_by_default():
    from nnc import build_model
    from nnc.runtime.param_groups import param_groups

    for decay_bias, want_bias in (("", 0.0), (", decay_bias true", 0.01)):
        spec = load_text(f"model M {{\n input vector(4)\n dense 3\n batchnorm\n dense 2\n}}\nregularize l2 0.01{decay_bias}\n")
        graph = check(spec)
        model = build_model(graph)
        groups = param_groups(model, graph, coupled_l2=True)
        decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
        for name, p in model.named_parameters():
            want = 0.01 if name.endswith("weight") and not name.startswith("bn") else want_bias
            assert decay[id(p)] == want, name
    # and behaviourally: one SGD step on a zero data loss moves weights by lr*l2*w, biases not at all
    spec = load_text("model M {\n input vector(4)\n dense 3\n}\nregularize l2 0.5\noptimizer sgd(lr=0.1)\n")
    graph = check(spec)
    model = build_model(graph)
    with torch.no_grad():
        model.fc1.bias.fill_(1.0)
    w0 = model.fc1.weight.detach().clone()
    from nnc.compiler.vocab.optimizers import OPTIMIZERS

    opt = OPTIMIZERS["sgd"].build(spec.optimizer.params, param_groups(model, graph, True))
    (model(torch.zeros(1, 4)) * 0).sum().backward()
    opt.step()
    torch.testing.assert_close(model.fc1.weight, w0 * (1 - 0.1 * 0.5))
    assert torch.equal(model.fc1.bias, torch.ones(3))


def test_an_epochs_last_update_is_judged_before_it_is_saved(tmp_path):
    """With one step per epoch (a batch larger than the split) no step's loss ever sees the update
    that explodes: the end of the epoch must, before `last` and `best` are written. The run keeps
    its initial weights as the last good checkpoint, and its pictures and logs."""
    path = mlp(tmp_path, epochs=3, reg="regularize l2 0\n")
    r = run_nnc("train", path, "--out", tmp_path / "run", "--set", "optimizer=sgd(lr=50)",
                "--set", "train.batch=5000", "--json", "--plots", "wait")
    assert r.returncode == 3, r.stderr
    assert "training diverged at the end of epoch 1" in r.stderr and "The learning rate (50)" in r.stderr
    ck = checkpoint.load(tmp_path / "run" / "last.safetensors")
    assert ck.info["epoch"] == 0
    assert max(float(t.abs().max()) for t in ck.model.values()) < 5
    assert not (tmp_path / "run" / "best.safetensors").exists()
    assert (tmp_path / "run" / "dashboard.png").stat().st_size > 1000  # the monitors finished their picture
    assert "Traceback" not in r.stderr
    assert json.loads(r.stdout)["exit"] == 3  # --json: a script gets its one line on failure too


def test_without_a_validation_split_best_is_the_lowest_training_loss(tmp_path):
    """No val split: `best` is the epoch of the lowest training loss (it was once the highest, read
    as if it were an accuracy)."""
    path = mlp(tmp_path, data=", preprocess mean_image normalize", epochs=4)
    path.write_text(path.read_text().replace("val 0.15", "val 0"))
    final = train(check(load_spec(str(path))), tmp_path / "run", device="cpu", quiet=True, callbacks=[])
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"train_loss"' in l]
    losses = [r["train_loss"] for r in rows]
    assert final["best_epoch"] == 1 + losses.index(min(losses)) and losses[-1] < losses[0]


def test_run_directory_travels_and_resume_extends_it(tmp_path):
    """A spec's relative data path is read beside the spec (run from anywhere), and its checkpoints
    evaluate from anywhere; the run's spec copy says which overrides it ran with; --resume refuses
    changes but --epochs extends the run, into another directory too, with its history intact."""
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    proj.mkdir(), elsewhere.mkdir()
    rng = np.random.default_rng(0)
    np.savez(proj / "d.npz", x=rng.standard_normal((90, 8)).astype(np.float32), y=np.arange(90) % 3)
    (proj / "s.nnspec").write_text('model M {\n input vector(8)\n dense 3\n}\ndata npz("d.npz")\ntrain batch 16\n')
    r = run_nnc("train", proj / "s.nnspec", "--epochs", "2", "--out", tmp_path / "run", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "spec.nnspec").read_text().startswith("# nnc train applied: --set train.epochs=2 ")
    r = run_nnc("eval", tmp_path / "run" / "best.safetensors", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["n"] == 18, r.stderr

    r = run_nnc("train", "--resume", tmp_path / "run", "--set", "optimizer.lr=1")
    assert r.returncode == 2 and "--resume continues a run as it was" in r.stderr
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:  # killed after writing part of epoch 3
        f.write(json.dumps({"monitor": "step", "epoch": 3, "step": 13, "loss": 1.0}) + "\n")
    r = run_nnc("train", "--resume", tmp_path / "run", "--epochs", "3", "--out", tmp_path / "more", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["epochs"] == 3
    rows = [json.loads(l) for l in (tmp_path / "more" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "train_loss" in r] == [1, 2, 3]
    assert not any(r.get("step") == 13 and r.get("monitor") for r in rows)
    assert (tmp_path / "more" / "best.safetensors").is_file()


class _Torchvision:
    """An import hook standing in for torchvision: absent (None) or raising what a torchvision
    built for another torch raises at import."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchvision":
            if self.error is None:
                raise ModuleNotFoundError(f"No module named {name!r}")
            raise self.error


@pytest.mark.parametrize("error,message", [
    (None, r"the cifar10 source needs torchvision: pip install 'nnc\[vision\]'"),
    (RuntimeError("operator torchvision::nms does not exist"),
     r"installed but fails to import \(RuntimeError: operator torchvision::nms does not exist\); it must be "
     r"the build that matches torch"),
])
def test_torchvision_sources_without_a_working_torchvision(tmp_path, monkeypatch, error, message):
    import sys

    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_Torchvision(error), *sys.meta_path])
    spec = load_text(f'model M {{\n input image(3, 32, 32)\n dense 10\n}}\ndata cifar10(root="{tmp_path}")\n')
    with pytest.raises(NncError, match=message):
        load_splits(check(spec))
