"""The Python API (docs/python.md): the documented example runs as written, and in-memory data
(numpy arrays, torch tensors, a torch Dataset) trains, evaluates, exports and is checked."""

import re

import numpy as np
import pytest
from conftest import ROOT

import nnc

DOC = (ROOT / "docs" / "python.md").read_text()


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    (example,) = re.findall(r"^```python\n(.*?)^```", DOC, re.S | re.M)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/python.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"Run\(DigitsMLP: 3 epochs, test accuracy (9\d|100)\.\d\d%", out), out
    assert re.search(r"accuracy on the first 200: 0\.9\d", out), out
    assert "unknown dense option 'kernel' 3" in out
    assert (tmp_path / "runs" / "notebook" / "digits.onnx").is_file()


def pairs_of(x, y, bad=None):
    """A map-style torch Dataset over arrays that counts the items read (in a counter shared with
    the DataLoader's forked workers); `bad`: {index: what item `index` is instead}."""
    import multiprocessing

    import torch

    class Pairs(torch.utils.data.Dataset):
        classes = [f"digit {i}" for i in range(10)]

        def __init__(self):
            self.reads = multiprocessing.Value("l", 0)

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            with self.reads.get_lock():
                self.reads.value += 1
            if bad and i in bad:
                return bad[i]() if callable(bad[i]) else bad[i]
            return torch.from_numpy(x[i]), int(y[i])

    return Pairs()


def test_tensors_and_datasets_train_the_same_model(tmp_path):
    """Arrays and tensors train in memory; a Dataset is streamed by DataLoader workers (each item
    read again every epoch, never all held at once) to the same losses, split and statistics, or
    with `cache memory` read once into memory like arrays."""
    torch = pytest.importorskip("torch")
    x, y = digits()
    x, y = x[:600], y[:600]
    arrays = nnc.train("digits_mlp", data=(x, y), epochs=2, out=tmp_path / "a", quiet=True, monitors=False)
    tensors = nnc.train("digits_mlp", data=(torch.from_numpy(x), torch.from_numpy(y)), epochs=2, out=tmp_path / "t",
                        quiet=True, monitors=False)
    assert [r["train_loss"] for r in arrays.history] == [r["train_loss"] for r in tensors.history]
    streamed = pairs_of(x, y)
    dataset = nnc.train("digits_mlp", data=streamed, epochs=2, out=tmp_path / "d", quiet=True, monitors=False)
    for a, d in zip(arrays.history, dataset.history, strict=True):
        for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert d[k] == pytest.approx(a[k], rel=1e-5), k
    assert dataset.test_loss == pytest.approx(arrays.test_loss, rel=1e-5)
    assert dataset.test_accuracy == arrays.test_accuracy
    from nnc.runtime import checkpoint

    a, d = (checkpoint.load(r.best_checkpoint).preprocess for r in (arrays, dataset))
    np.testing.assert_allclose(d["mean"], a["mean"], rtol=1e-5, atol=1e-6)
    # train 420, val 60, test 120 (digits_mlp: val 0.1, test 0.2): the first item, the statistics
    # pass, 2 epochs of train and val, the test split
    assert streamed.reads.value == 1 + 420 + 2 * (420 + 60) + 120
    whole = pairs_of(x, y)
    memory = nnc.train("digits_mlp", data=whole, epochs=2, out=tmp_path / "m", quiet=True, monitors=False,
                       overrides={"data.cache": "memory"})
    assert whole.reads.value == 600
    assert [r["train_loss"] for r in memory.history] == [r["train_loss"] for r in arrays.history]
    assert len(arrays.history) == 2 and arrays.test_accuracy > 0.5
    scored, given = pairs_of(x, y), nnc.evaluate(dataset, data=(x, y))
    streamed_eval = nnc.evaluate(dataset, data=scored)  # streamed too: item 0, then every item once
    assert scored.reads.value == 601 and streamed_eval["classes"] == scored.classes
    assert streamed_eval["loss"] == pytest.approx(given["loss"], rel=1e-5)
    assert streamed_eval["predictions"] == given["predictions"] and streamed_eval["n"] == 600
    assert nnc.evaluate(tmp_path / "a", data=(x, y))["n"] == 600
    frame = arrays.dataframe()  # pandas is in the dev extra, not a dependency
    assert list(frame.index) == [1, 2] and "val_accuracy" in frame.columns


def test_a_dataset_that_does_not_fit_is_an_nnc_error(tmp_path):
    """Item 0 is read and checked before training; a later bad item stops the run when a worker
    meets it (and a val or test item too, though their batches are only scored)."""
    torch = pytest.importorskip("torch")
    x, y = digits()
    x, y = x[:300], y[:300]
    from nnc.runtime.data import split_indices

    val = int(split_indices(nnc.check(nnc.load("digits_mlp")), 300, None)["val"][0])
    cases = [({0: lambda: x[0]}, "the Dataset: item 0 is a ndarray, not an (x, y) pair"),
             ({0: (x[0, :4], 1)}, "the data's examples have shape (4, 8) (32 values), but the model's input is vector(64)"),
             ({0: (x[0], 0.5)}, "cross_entropy needs integer class labels"),
             ({0: (x[0], 12)}, "labels out of range: found label 12 (classes are 0..9)"),
             ({250: (x[0, :4], 1)}, "streamed data: the Dataset: item 250's x has shape (4, 8), item 0's (8, 8)"),
             ({77: lambda: 1 / 0}, "streamed data: the Dataset: item 77 raised ZeroDivisionError: division by zero"),
             ({val: (x[0] * np.nan, 1)}, "streamed data: the Dataset: the inputs contain NaN or infinite values")]
    for k, (bad, message) in enumerate(cases):
        with pytest.raises(nnc.NncError) as e:
            nnc.train("digits_mlp", data=pairs_of(x, y, bad), epochs=1, out=tmp_path / str(k), quiet=True,
                      monitors=False)
        assert message in str(e.value), (k, str(e.value))

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(x, y))

    with pytest.raises(nnc.NncError, match="an IterableDataset cannot be split into train, val and test by index"):
        nnc.train("digits_mlp", data=Stream(), out=tmp_path / "i", quiet=True)

    class NoLength:
        def __getitem__(self, i):
            return x[i], y[i]

    with pytest.raises(nnc.NncError, match="a NoLength without len"):
        nnc.train("digits_mlp", data=NoLength(), out=tmp_path / "l", quiet=True)


def test_without_pandas_the_history_is_a_list(monkeypatch):
    import sys

    run = nnc.Run(ROOT, None, None, [{"epoch": 1, "train_loss": 2.0}], {})
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        run.dataframe()
    assert run.history[0]["train_loss"] == 2.0


def test_errors_are_nnc_errors_with_diagnostics(tmp_path):
    x, y = digits()
    with pytest.raises(nnc.NncError) as e:  # the model's input does not fit the data given
        nnc.train("digits_mlp", data=(x[:, :4], y), out=tmp_path / "r", quiet=True)
    assert "the data's examples have shape (4, 8)" in e.value.diagnostics[0].message
    with pytest.raises(nnc.NncError) as e:
        nnc.train("digits_mlp", data=(x, y.astype(np.float32)), out=tmp_path / "r2", quiet=True)
    assert "integer class labels" in str(e.value)
    with pytest.raises(nnc.NncError) as e:  # spec text with an error: a span to point at
        nnc.load("model M {\n    input vector(64)\n    dense 10\n}\noptimizer adma\n")
    d = e.value.diagnostics[0]
    assert (d.span.line, d.fix) == (5, "adam")


def test_overrides_doctor_and_a_spec_for_memory(tmp_path):
    x, y = digits()
    spec = nnc.load("digits_mlp", overrides={"optimizer.lr": 1e-3, "train.batch": 16})
    assert (spec.optimizer.params.lr, spec.train.batch) == (1e-3, 16)
    checks = nnc.doctor(spec, data=(x, y), checks=("init", "overfit"))
    assert [c.name for c in checks][0].startswith("loss at init") and all(c.passed for c in checks)
    data = pairs_of(x, y)  # a Dataset: the doctor reads a sample of its training split, streamed
    checks = nnc.doctor(spec, data=data, checks=("init", "overfit"))
    assert all(c.passed for c in checks) and data.reads.value < len(x)
    text = (ROOT / "specs" / "digits_mlp.nnspec").read_text().replace("data       digits,", "data       memory,")
    nnc.check(nnc.load(text))  # a spec for data in memory checks
    run = nnc.train(text, data=(x, y), epochs=1, out=tmp_path / "m", quiet=True, monitors=False)
    assert run.graph.spec.data.source.kind == "memory" and run.best_checkpoint.is_file()
    from conftest import run_nnc

    r = run_nnc("eval", run.best_checkpoint)  # the command line has nothing to read its data from
    assert r.returncode == 1 and "handed over in memory" in r.stderr
