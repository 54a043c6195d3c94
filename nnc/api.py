"""The Python API (docs/python.md): what the commands do, for notebooks and scripts, with data that
may live in memory. Every function takes a spec as a path, a library name, spec text or a Spec,
and raises `nnc.NncError` (its `.diagnostics` say what and where) for a wrong spec or data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nnc.diagnostics import NncError

# ---------------------------------------------------------------- specs and data


def _overrides(overrides, epochs: int | None = None, seed: int | None = None) -> tuple[str, ...]:
    """{"optimizer.lr": 3e-4} or ["optimizer.lr=3e-4"] -> the --set texts, epochs and seed last."""
    from nnc.compiler.values import format_value

    if overrides is None:
        out = []
    elif isinstance(overrides, dict):
        out = [f"{k}={v if isinstance(v, str) else format_value(v) if not isinstance(v, float) else repr(v)}"
               for k, v in overrides.items()]
    elif isinstance(overrides, str):
        out = [overrides]
    else:
        out = list(overrides)
    out += [f"train.epochs={epochs}"] * (epochs is not None) + [f"train.seed={seed}"] * (seed is not None)
    return tuple(out)


def load(spec_or_path, overrides=None):
    """A Spec from a path, a library name (`alexnet`), spec text (it holds a line break) or a Spec
    (a Graph's spec too), with `overrides` applied as `--set` applies them."""
    from nnc.compiler.graph import Graph
    from nnc.compiler.load import load_spec, load_text
    from nnc.compiler.spec import Spec

    sets = _overrides(overrides)
    if isinstance(spec_or_path, Graph):
        spec_or_path = spec_or_path.spec
    if isinstance(spec_or_path, Spec):
        s = spec_or_path
        return load_text(s.text, s.document.name, s.overrides + sets) if sets else s
    if isinstance(spec_or_path, str) and "\n" in spec_or_path:
        return load_text(spec_or_path, "<spec>", sets)
    if isinstance(spec_or_path, (str, Path)):
        return load_spec(str(spec_or_path), sets)
    raise TypeError(f"expected a spec path, spec text or a Spec, got {type(spec_or_path).__name__}")


def _numpy(a):
    import numpy as np

    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _dataset(data) -> bool:
    """Whether `data` is a torch Dataset to read item by item (NncError for one nnc cannot read)."""
    import sys

    torch = sys.modules.get("torch")  # (a torch Dataset means torch is imported already)
    if torch is not None and isinstance(data, torch.utils.data.IterableDataset):
        raise NncError("data: an IterableDataset cannot be split into train, val and test by index; nnc reads a "
                       "map-style Dataset (with __len__ and __getitem__) or (x, y) arrays")
    if isinstance(data, (tuple, list)) or hasattr(data, "shape"):  # (x, y), or an array given alone
        return False
    if hasattr(data, "__getitem__") and not hasattr(data, "__len__"):
        raise NncError(f"data: a {type(data).__name__} without len(): nnc needs the number of examples to split "
                       "them; give the Dataset a __len__")
    return hasattr(data, "__getitem__")


def arrays(data):
    """(x, y) arrays or tensors, or a torch Dataset of (x, y) pairs (read into memory), as the
    runtime's Arrays; None stays None (the spec's own data source)."""
    import numpy as np

    from nnc.compiler.vocab.sources import Arrays

    if data is None:
        return None
    classes = getattr(data, "classes", None)
    if _dataset(data):
        from nnc.runtime.stream import pair

        try:
            pairs = [pair(data[i], i) for i in range(len(data))]
        except NncError as e:
            raise NncError(f"data: the Dataset: {e}") from None
        if not pairs:
            raise NncError("data: the Dataset is empty")
        x, y = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise NncError(f"data: expected (x, y) arrays or tensors, or a torch Dataset; got {type(data).__name__}")
    x, y = _numpy(x).astype(np.float32), _numpy(y)  # (token ids are checked whole and made int64 later)
    y = y.astype(np.int64) if y.dtype.kind in "iub" else y.astype(np.float32)
    return Arrays(x, y, [str(c) for c in classes] if classes is not None else None)


def _given(data, spec):
    """What training reads in place of the spec's source: a torch Dataset streamed (unless the
    spec says `cache memory`: then read whole, as arrays are), arrays in memory, or None."""
    if data is not None and _dataset(data) and spec.data.cache != "memory":
        from nnc.runtime.stream import UserDataset

        classes = getattr(data, "classes", None)
        return UserDataset(data, [str(c) for c in classes] if classes is not None else None)
    return arrays(data)


def _checked(spec, given):
    """The checked Graph; with data in memory, the spec's written source stands aside for it."""
    from nnc.compiler.checks import check
    from nnc.compiler.values import Choice
    from nnc.compiler.vocab.registry import NoParams

    if given is not None and spec.data.source.kind != "memory":
        spec = replace(spec, data=replace(spec.data, source=Choice("memory", NoParams(), spec.data.source.span)))
    return check(spec)


# ---------------------------------------------------------------- train


@dataclass
class Run:
    """A finished training run: its directory, checked graph, trained module (the best weights,
    in eval mode), history (one record per epoch) and final metrics."""

    out: Path
    graph: Any
    model: Any
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    @property
    def best_checkpoint(self) -> Path:
        return Path(self.metrics["best_checkpoint"])

    @property
    def test_loss(self) -> float | None:
        return self.metrics.get("test_loss")

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.get("test_accuracy")

    def dataframe(self):
        """The history as a pandas DataFrame (pandas is not a dependency of nnc: install it)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Run.dataframe() needs pandas (pip install pandas); Run.history is the same "
                              "records as a list of dicts") from None
        return pd.DataFrame(self.history).set_index("epoch")

    def __repr__(self) -> str:
        acc = self.test_accuracy
        score = f"test accuracy {100 * acc:.2f}%" if acc is not None else (
            f"test loss {self.test_loss:.4f}" if self.test_loss is not None else "no test split")
        return (f"Run({self.graph.spec.model.name}: {len(self.history)} epochs, {score}, "
                f"best {self.best_checkpoint})")


def _history(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "epoch" in r and "train_loss" in r]


def _out_dir(spec, out) -> str:
    from nnc.commands.train import _check_fresh, _default_out

    if out is not None:
        _check_fresh(str(out))
        return str(out)
    name = Path(spec.document.name).stem if not spec.document.name.startswith("<") else spec.model.name.lower()
    return _default_out(name, quiet=True)


def train(spec_or_path, data=None, *, out=None, overrides=None, epochs: int | None = None,
          device: str | None = None, seed: int | None = None, quiet: bool = False, monitors: bool = True) -> Run:
    """Train as `nnc train` does, into `out` (default: runs/<spec name>, -2, -3 ...). `data`:
    (x, y) numpy arrays or torch tensors (held in memory), or a map-style torch Dataset of (x, y)
    pairs (streamed by DataLoader workers), in place of the spec's data source (split by the
    spec's val and test fractions); None reads the spec's own."""
    from nnc.compiler.torch_module import build_model
    from nnc.runtime import checkpoint
    from nnc.runtime.train import train as run_training

    spec = load(spec_or_path, _overrides(overrides, epochs, seed))
    given = _given(data, spec)
    graph = _checked(spec, given)
    where = _out_dir(spec, out)
    final = run_training(graph, where, device=device or "auto", quiet=quiet, data=given,
                         callbacks=None if monitors else [])
    model = build_model(graph)
    model.load_state_dict(checkpoint.load(final["best_checkpoint"]).model)
    return Run(Path(where), graph, model.eval(), _history(Path(where)), final)


# ---------------------------------------------------------------- after training


def _path(checkpoint_or_run) -> str:
    if isinstance(checkpoint_or_run, Run):
        return str(checkpoint_or_run.best_checkpoint)
    p = Path(checkpoint_or_run)
    return str(p / "best.safetensors") if p.is_dir() else str(p)


def evaluate(checkpoint_or_run, data=None, *, split: str = "test", device: str | None = None) -> dict:
    """Loss, accuracy, confusion matrix and predictions of a checkpoint (or a Run, or a run
    directory's best): on its own data's `split`, or on all of `data` given in memory."""
    from nnc.runtime.evaluate import evaluate_checkpoint

    path = _path(checkpoint_or_run)
    if data is None:
        return evaluate_checkpoint(path, split, device or "auto")
    return _evaluate_given(path, data, device or "auto")


def _evaluate_given(path: str, data, device: str) -> dict:
    from nnc.compiler.torch_module import build_model
    from nnc.compiler.vocab.losses import LOSSES, build_loss
    from nnc.runtime import checkpoint
    from nnc.runtime.data import Split, data_error, load_arrays, tensors
    from nnc.runtime.device import pick_device
    from nnc.runtime.distributed import World
    from nnc.runtime.evaluate import evaluate_batches
    from nnc.runtime.feeds import EVAL_BATCH, dataset_feed
    from nnc.runtime.stream import UserDataset

    ck = checkpoint.load(path)
    spec = ck.spec()
    given = _given(data, spec)
    graph = _checked(spec, given)
    ck.check_against(graph)
    model = build_model(graph)
    model.load_state_dict(ck.model)
    dev = pick_device(device)
    loss = LOSSES[graph.spec.loss.kind]
    if isinstance(given, UserDataset):  # streamed as training streams it
        feed = dataset_feed(graph, given, dev, dict(ck.preprocess))
        batches = feed.eval_batches(World(), EVAL_BATCH)
    else:
        feed, checked = None, load_arrays(graph, given)
        x, y = tensors(Split(checked.x, checked.y), dict(ck.preprocess), dev)
        batches = ((x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH))
    res = evaluate_batches(model.to(dev), batches, build_loss(graph), graph.output.features if loss.classification
                           else None, labels=loss.predicts == "labels")
    if feed is not None and feed.fatal:
        raise data_error(graph, f"streamed data: {feed.fatal}")
    return {**res.as_dict(), "split": "given", "classes": ck.classes, "checkpoint": path}


def export(checkpoint_or_run, out=None, *, opset: int | None = None, probabilities: bool = False,
           quantize: str | None = None, max_drop: float = 1.0) -> Path:
    """A verified ONNX model (preprocessing inside) of a checkpoint, a Run or a bare spec's fresh
    weights, written to `out` (default: the source's name with .onnx, here). quantize="int8":
    `nnc export --quantize int8`, NncError when it loses more than `max_drop` accuracy points."""
    from nnc.compiler.opsets import DEFAULT_OPSET
    from nnc.runtime import artifacts
    from nnc.runtime.export import export_artifact, export_int8

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize={quantize!r}: nnc quantizes to 'int8' only")
    path = _path(checkpoint_or_run)
    target = Path(out) if out is not None else Path(Path(path).stem + ".onnx")
    if quantize:
        export_int8(artifacts.load(path), str(target), opset or DEFAULT_OPSET, probabilities, max_drop)
    else:
        export_artifact(artifacts.load(path), str(target), opset or DEFAULT_OPSET, probabilities)
    return target


def doctor(spec_or_path, data=None, *, overrides=None, checks=None, device: str = "cpu", budget: float = 60.0):
    """The notes' sanity checks (`nnc doctor`): a list of Check records (name, passed, summary,
    details); `checks` picks some of init, reg, overfit, grad, lr."""
    from nnc.runtime.doctor import CHECKS, SHORT, run_doctor

    spec = load(spec_or_path, overrides)
    given = _given(data, spec)  # (a Dataset is streamed: the doctor reads a sample of it)
    graph = _checked(spec, given)
    chosen = tuple(SHORT[c] for c in checks) if checks else CHECKS
    return run_doctor(graph, device=device, checks=chosen, budget=budget, data=given)


def search(spec_or_path, *, trials: int, out=None, epochs: int | None = None, coarse_epochs: int | None = None,
           stages=("coarse", "fine"), sampler: str = "random", seed: int = 0, jobs: int = 1, device: str = "cpu"):
    """`nnc search` over the spec's ranges: the SearchResult (trials best first, the best spec
    written to the study directory). The spec is a file or library name, or text (written into
    the study directory, since trials reread it)."""
    from nnc.compiler.library import resolve
    from nnc.runtime.search import Config
    from nnc.runtime.search import search as run_search

    spec = load(spec_or_path)
    folder = Path(out) if out is not None else Path("runs") / f"search_{spec.model.name.lower()}"
    path = spec.document.name
    if path.startswith("<"):
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / "search.nnspec")
        Path(path).write_text(spec.text)
    cfg = Config(resolve(path), str(folder), trials, epochs, coarse_epochs, tuple(stages), sampler, seed, jobs, device)
    return run_search(cfg)
