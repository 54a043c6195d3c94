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


def test_tensors_and_datasets_train_the_same_model(tmp_path):
    torch = pytest.importorskip("torch")
    x, y = digits()
    x, y = x[:600], y[:600]
    arrays = nnc.train("digits_mlp", data=(x, y), epochs=2, out=tmp_path / "a", quiet=True, monitors=False)
    tensors = nnc.train("digits_mlp", data=(torch.from_numpy(x), torch.from_numpy(y)), epochs=2, out=tmp_path / "t",
                        quiet=True, monitors=False)

    class Pairs(torch.utils.data.Dataset):
        classes = [f"digit {i}" for i in range(10)]

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return torch.from_numpy(x[i]), int(y[i])

    dataset = nnc.train("digits_mlp", data=Pairs(), epochs=2, out=tmp_path / "d", quiet=True, monitors=False)
    assert [r["train_loss"] for r in arrays.history] == [r["train_loss"] for r in tensors.history] \
        == [r["train_loss"] for r in dataset.history]
    assert len(arrays.history) == 2 and arrays.test_accuracy > 0.5
    assert nnc.evaluate(dataset, data=Pairs())["classes"] == Pairs.classes
    assert nnc.evaluate(tmp_path / "a", data=(x, y))["n"] == 600
    frame = arrays.dataframe()  # pandas is in the dev extra, not a dependency
    assert list(frame.index) == [1, 2] and "val_accuracy" in frame.columns


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
    text = (ROOT / "specs" / "digits_mlp.nnspec").read_text().replace("data       digits,", "data       memory,")
    nnc.check(nnc.load(text))  # a spec for data in memory checks
    run = nnc.train(text, data=(x, y), epochs=1, out=tmp_path / "m", quiet=True, monitors=False)
    assert run.graph.spec.data.source.kind == "memory" and run.best_checkpoint.is_file()
    from conftest import run_nnc

    r = run_nnc("eval", run.best_checkpoint)  # the command line has nothing to read its data from
    assert r.returncode == 1 and "handed over in memory" in r.stderr
