"""Graph + weights -> a verified ONNX model, emitted straight from the shaped graph.

Each layer kind's emitter lives on its `LayerDef` (`LayerDef.onnx`); this module holds what
they share: the `Emitter` (nodes, initializers, constants), the preprocessing prefix, the
residual walk, metadata, and the check against PyTorch with onnxruntime before anything is
written. Why not torch.onnx: the dynamo exporter costs ~3 s of start-up per process and the
TorchScript one is deprecated; emitting from the graph gives native Conv / LRN / LSTM / GRU
nodes and an implementation independent of the module it is checked against.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnc.compiler.graph import Graph, Info, LayerInfo, ResidualInfo
from nnc.compiler.layers import LAYERS
from nnc.compiler.opsets import DEFAULT_OPSET, MIN_OPSET
from nnc.compiler.vocab.sources import SOURCES
from nnc.diagnostics import NncError
from nnc.files import file_in_the_way, write_atomic

log = logging.getLogger(__name__)

INPUT, BATCH = "input", "N"
# max |ort - torch| <= RTOL * max|torch| + ATOL: relative to the output's scale, so that a model
# whose outputs are tiny (two_layer's fresh ones are ~5e-6) is checked as strictly as any other;
# ATOL only keeps an all-zero output from needing an exact match
RTOL, ATOL = 1e-4, 1e-9



@functools.cache
def max_opset() -> int:
    """The newest opset both the installed onnx and onnxruntime handle (onnxruntime often lags)."""
    import onnx

    top = onnx.defs.onnx_opset_version()
    return next((v for v in range(top, MIN_OPSET, -1) if _ort_loads(v)), MIN_OPSET)


def _ort_loads(opset: int) -> bool:
    """Does onnxruntime load a one-node graph stamped with `opset`? (~5 ms)"""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    v = helper.make_tensor_value_info
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [v("x", TensorProto.FLOAT, [1])],
                          [v("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 10)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's Fail: "opset N is under development" or unknown
        return False
    return True


def check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise NncError(f"--opset {opset} is older than nnc emits: its graphs are written in the forms of opset "
                       f"{MIN_OPSET} and later (LayerNormalization among them), which every onnxruntime since 1.14 "
                       f"runs; choose {MIN_OPSET}..{max_opset()}")
    if opset > DEFAULT_OPSET and opset > max_opset():
        import onnx
        import onnxruntime as ort

        raise NncError(f"--opset {opset} is newer than nnc can export and verify here (onnx {onnx.__version__} "
                       f"knows opsets up to {onnx.defs.onnx_opset_version()}, onnxruntime {ort.__version__} runs up "
                       f"to {max_opset()}); choose {MIN_OPSET}..{max_opset()}")


# ---------------------------------------------------------------- the emitter


@dataclass
class Emitter:
    """Collects nodes and initializers; emitters call these, never `onnx` directly."""

    state: dict[str, np.ndarray]  # the model's state_dict as float32 numpy arrays
    opset: int = DEFAULT_OPSET
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    _names: set[str] = field(default_factory=set)

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self._names:
            k += 1
            name = f"{hint}_{k}"
        self._names.add(name)
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, n_out: int = 1, **attrs) -> Any:
        """Add a node; returns its output name (or a list of `n_out` names)."""
        from onnx import helper

        outs = [self.fresh(f"{hint}" if n_out == 1 else f"{hint}_{i}") for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(f"{hint}/{op_type}"), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, array: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values, hint: str) -> str:
        return self.const(np.asarray(values, np.int64), hint)

    def tensor(self, info: LayerInfo, name: str) -> np.ndarray:
        key = f"{info.path}.{name}"
        if key not in self.state:
            raise NncError(f"{info.name}: the weights have no tensor {key!r}; "
                           "the checkpoint does not match its spec")
        return self.state[key]

    def param(self, info: LayerInfo, name: str, array: np.ndarray | None = None) -> str:
        """An initializer for the layer's tensor `name` (or a transformed copy of it)."""
        value = self.tensor(info, name) if array is None else array
        return self.const(value.astype(np.float32, copy=False), f"{info.path}.{name}")

    def reduce_max(self, x: str, axis: int, hint: str) -> str:
        if self.opset >= 18:  # axes became an input in opset 18
            return self.op("ReduceMax", [x, self.ints([axis], f"{hint}.axes")], hint, keepdims=0)
        return self.op("ReduceMax", [x], hint, axes=[axis], keepdims=0)


# ---------------------------------------------------------------- graph walk


def _node(e: Emitter, info: Info, x: str) -> str:
    if isinstance(info, ResidualInfo):
        y = x
        for n in info.body:
            y = _node(e, n, y)
        s = x
        if info.proj:
            conv, bn = info.proj
            s = _layer(e, bn, _layer(e, conv, x))
        return e.op("Add", [y, s], info.path)
    return _layer(e, info, x)


def _layer(e: Emitter, info: LayerInfo, x: str) -> str:
    emit = LAYERS[info.kind].onnx
    if emit is None:  # tests/test_export.py keeps every kind covered
        raise NncError(f"{info.name}: layer kind {info.kind!r} has no ONNX emitter")
    return emit(e, info, x)


def _preprocess(e: Emitter, graph: Graph, stats: dict[str, np.ndarray], x: str) -> str:
    """(x - mean) / std [@ proj]: the exact steps of runtime/preprocess.apply."""
    if not stats:
        return x
    x = e.op("Sub", [x, e.const(stats["mean"].astype(np.float32), "pre.mean")], "pre_centered")
    x = e.op("Div", [x, e.const(stats["std"].astype(np.float32), "pre.std")], "pre_scaled")
    if "proj" in stats:
        x = e.op("MatMul", [x, e.const(stats["proj"].astype(np.float32), "pre.proj")], "pre_projected")
    return x


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Exported:
    model: Any  # onnx.ModelProto
    output: str
    check: dict  # batch size -> {"max_abs": .., "max_rel": ..}


def emit(graph: Graph, state: dict[str, Any], stats: dict[str, np.ndarray] | None = None,
         classes: list[str] | None = None, opset: int = DEFAULT_OPSET, probabilities: bool = False):
    """The ONNX ModelProto of `graph` with `state` (torch tensors or arrays) and preprocessing."""
    from onnx import TensorProto, helper

    from nnc import __version__

    if opset < MIN_OPSET:
        raise NncError(f"--opset {opset} is older than nnc emits: its graphs are written in the forms of opset "
                       f"{MIN_OPSET} and later (LayerNormalization among them), which every onnxruntime since 1.14 "
                       f"runs; choose {MIN_OPSET}..{max_opset()}")
    stats = dict(stats or {})
    arrays = {k: _numpy(v) for k, v in state.items()}
    e = Emitter(arrays, opset)
    e._names.add(INPUT)
    spec = graph.spec
    raw = spec.model.input
    tokens = raw.kind == "tokens"
    x = _preprocess(e, graph, {} if tokens else stats, INPUT)
    for n in graph.nodes:
        x = _node(e, n, x)
    out_name = "probabilities" if probabilities else "scores"
    if probabilities:
        x = e.op("Softmax", [x], "softmax", axis=1 if graph.output.kind in ("image", "vector") else -1)
    e.nodes.append(helper.make_node("Identity", [x], [out_name], name="output/Identity"))

    in_type = TensorProto.INT64 if tokens else TensorProto.FLOAT
    inp = helper.make_tensor_value_info(INPUT, in_type, [BATCH, *raw.dims])
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [BATCH, *graph.output.dims])
    g = helper.make_graph(e.nodes, spec.model.name, [inp], [out], e.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="nnc",
                              producer_version=__version__)
    model.ir_version = min(model.ir_version, 10)  # readable by onnxruntime releases of the last two years
    meta = {"nnc_version": __version__, "spec_name": spec.model.name, "spec_sha256": spec_hash(spec.source.text),
            "classes": json.dumps(classes), "input_layout": str(raw), "output": out_name,
            "preprocessing": _preprocessing_note(graph, stats), "data_source": spec.data.source.kind}
    if tokens:
        meta["vocab"] = str(raw.vocab)
    if raw.kind == "image":
        pixel_max = SOURCES[spec.data.source.kind].pixel_max
        meta["pixel_max"] = "unknown" if pixel_max is None else f"{pixel_max:g}"
    helper.set_model_props(model, meta)
    return model


def _preprocessing_note(graph: Graph, stats: dict) -> str:
    """Metadata `preprocessing`: inside the graph, none, or declared but missing (a bare spec)."""
    if graph.spec.model.input.kind == "tokens":
        return "none"
    if stats:
        return "inside the graph"
    if graph.spec.data.preprocess:
        steps = " ".join(c.kind for c in graph.spec.data.preprocess)
        return (f"not in this graph: the spec declares `preprocess {steps}`, whose statistics come from "
                "training; feed inputs already preprocessed, or export a trained checkpoint")
    return "none"


def bare_preprocessing_warning(graph: Graph) -> str | None:
    """The warning for exporting a spec (no fitted statistics) that declares preprocessing."""
    if graph.spec.model.input.kind == "tokens" or not graph.spec.data.preprocess:
        return None
    steps = " ".join(c.kind for c in graph.spec.data.preprocess)
    return (f"the spec declares `preprocess {steps}`, but its statistics come from training and are NOT in "
            "this graph: it expects inputs already preprocessed (export a trained checkpoint to bake them in)")


def _numpy(v) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    return v.detach().to("cpu").float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()


# ---------------------------------------------------------------- verification


def random_inputs(graph: Graph, stats: dict, batch: int, seed: int = 0) -> np.ndarray:
    """Raw inputs that preprocessing maps to roughly N(0, 1) (token ids for token inputs)."""
    rng = np.random.default_rng(seed + batch)
    raw = graph.spec.model.input
    if raw.kind == "tokens":
        return rng.integers(0, raw.vocab, (batch, *raw.dims), dtype=np.int64)
    z = rng.standard_normal((batch, *raw.dims)).astype(np.float32)
    if stats:
        z = z * stats["std"] + stats["mean"]
    return z.astype(np.float32)


def torch_reference(model, stats: dict, x: np.ndarray, probabilities: bool) -> np.ndarray:
    import torch

    from nnc.runtime.preprocess import apply

    with torch.no_grad():
        t = torch.from_numpy(x)
        if t.is_floating_point() and stats:
            t = apply({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in stats.items()}, t)
        y = model(t)
        if probabilities:
            y = torch.softmax(y, 1 if y.dim() == 2 or y.dim() == 4 else -1)
    return y.numpy()


def compare(got: np.ndarray, want: np.ndarray) -> dict:
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    scale = float(np.abs(want).max()) if want.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    return {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else max_abs, "scale": scale,
            "ok": bool(got.shape == want.shape and max_abs <= RTOL * scale + ATOL and np.isfinite(got).all())}


def verify(model_proto, graph: Graph, torch_model, stats: dict, probabilities: bool,
           batches=(1, 3)) -> dict:
    """onnxruntime vs the PyTorch module (eval mode) on random inputs; NncError on a mismatch.

    `model_proto` may be the ModelProto or its serialized bytes (big models: serialize once)."""
    import onnxruntime as ort

    data = model_proto if isinstance(model_proto, bytes) else model_proto.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's Fail / InvalidGraph: an opset or an op it does not implement
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NncError(f"onnxruntime {ort.__version__} cannot load the exported graph (opset "
                       f"{_opset_of(data)}; it runs opsets {MIN_OPSET}..{max_opset()}): {first[:300]}") from None
    torch_model.eval()
    report = {}
    for b in batches:
        x = random_inputs(graph, stats, b)
        got = sess.run(None, {INPUT: x})[0]
        want = torch_reference(torch_model, stats, x, probabilities)
        r = compare(got, want)
        report[b] = r
        if not r["ok"]:
            raise NncError(f"the exported graph disagrees with PyTorch at batch {b}: max abs error "
                           f"{r['max_abs']:.3g}, max relative error {r['max_rel']:.3g} (outputs up to "
                           f"{r['scale']:.3g}; tolerance {RTOL:g} * that + {ATOL:g}); nothing was written")
    return report


def export(graph: Graph, torch_model, stats: dict | None, classes: list[str] | None, out: str | Path | None,
           opset: int = DEFAULT_OPSET, probabilities: bool = False) -> Exported:
    """Emit, check (onnx.checker, then onnxruntime vs torch at batch 1 and 3), then write atomically."""
    import onnx

    check_opset(opset)
    if out is not None:  # before the (for VGG16: long) emit and check
        check_out_path(out)
    torch_model.eval()
    stats = {k: np.asarray(v) for k, v in (stats or {}).items()}
    model = emit(graph, torch_model.state_dict(), stats, classes, opset, probabilities)
    data = model.SerializeToString()  # once: the checker, onnxruntime and the file share it (VGG16: 550 MB)
    try:
        onnx.checker.check_model(data, full_check=False)
    except onnx.checker.ValidationError as e:  # an emitter bug, not a user error
        raise RuntimeError(f"nnc emitted an invalid ONNX graph: {e}") from e
    report = verify(data, graph, torch_model, stats, probabilities)
    if out is not None:
        write_atomic(Path(out), data, "ONNX model")
    return Exported(model, model.graph.output[0].name, report)


def _opset_of(data: bytes) -> int | str:
    import onnx

    try:
        return onnx.load_from_string(data).opset_import[0].version
    except Exception:
        return "?"


def check_out_path(out: str | Path) -> None:
    """-o names a file whose folder is, or can be made: said before any long work."""
    path = Path(out)
    if path.is_dir():
        raise NncError(f"{out}: is a folder; give a file name for the ONNX model (e.g. {path / 'model.onnx'})")
    if (blocker := file_in_the_way(path.parent)) is not None:
        raise NncError(f"{out}: {blocker} is a file, not a folder")


