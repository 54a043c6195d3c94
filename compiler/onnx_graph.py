"""Graph + weights -> an ONNX model, emitted straight from the shaped graph (the ONNX back end).

Each layer kind's emitter lives on its `LayerDef` (`LayerDef.onnx`); this module holds what
they share: the `Emitter` (nodes, initializers, constants), the preprocessing prefix, the
residual walk and the metadata. It only emits: runtime/export.py checks the graph against
PyTorch with onnxruntime before anything is written. Why not torch.onnx: the dynamo exporter
costs ~3 s of start-up per process and the TorchScript one is deprecated; emitting from the
graph gives native Conv / LRN / LSTM / GRU nodes and an implementation independent of the
module it is checked against.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnc.compiler.graph import Graph, LayerInfo
from nnc.compiler.layers import LAYERS
from nnc.compiler.opsets import DEFAULT_OPSET, MIN_OPSET
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.sources import SOURCES
from nnc.diagnostics import NncError

log = logging.getLogger(__name__)

INPUT, BATCH = "input", "N"



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


def _layer(e: Emitter, info: LayerInfo, xs: list[str]) -> str:
    emit = LAYERS[info.kind].onnx
    if emit is None:  # tests/test_export.py keeps every kind covered
        raise NncError(f"{info.name}: layer kind {info.kind!r} has no ONNX emitter")
    return emit(e, info, xs if info.merge else xs[0])


def _walk(e: Emitter, graph: Graph, values: dict[str, str]) -> dict[str, str]:
    """Every layer in execution order; `values`: each value's ONNX name, inputs given."""
    for l in graph.layers():
        values[l.path] = _layer(e, l, [values[s] for s in l.sources])
    return values


def _preprocess(e: Emitter, graph: Graph, stats: dict[str, np.ndarray], x: str) -> str:
    """(x - mean) / std [@ proj]: the exact steps of runtime/preprocess.apply."""
    if not stats:
        return x
    x = e.op("Sub", [x, e.const(stats["mean"].astype(np.float32), "pre.mean")], "pre_centered")
    x = e.op("Div", [x, e.const(stats["std"].astype(np.float32), "pre.std")], "pre_scaled")
    if "proj" in stats:
        x = e.op("MatMul", [x, e.const(stats["proj"].astype(np.float32), "pre.proj")], "pre_projected")
    return x


def emit(graph: Graph, state: dict[str, Any], stats: dict[str, np.ndarray] | None = None,
         classes: list[str] | None = None, opset: int = DEFAULT_OPSET, probabilities: bool = False):
    """The ONNX ModelProto of `graph` with `state` (torch tensors or arrays) and preprocessing."""
    from onnx import TensorProto, helper

    from nnc.version import __version__

    if opset < MIN_OPSET:  # runtime/export.check_opset says so to the user first; this is a bug if reached
        raise ValueError(f"opset {opset} is older than nnc emits ({MIN_OPSET} and later)")
    stats = dict(stats or {})
    arrays = {k: _numpy(v) for k, v in state.items()}
    e = Emitter(arrays, opset)
    spec = graph.spec
    raw = spec.model.input
    tokens = raw.kind == "tokens"
    names = input_names(graph)
    e._names.update(names + output_names(graph, probabilities))  # layers named like them take main_2
    values = {name: n for (name, _), n in zip(graph.inputs, names)}
    first = graph.inputs[0][0]
    values[first] = _preprocess(e, graph, {} if tokens else stats, values[first])
    values = _walk(e, graph, values)
    outs = []
    for out_name, (_, value, shape) in zip(output_names(graph, probabilities), graph.outputs):
        x = values[value]
        if probabilities:
            x = e.op("Softmax", [x], f"{out_name}.softmax", axis=1 if shape.kind in ("image", "vector") else -1)
        e.nodes.append(helper.make_node("Identity", [x], [out_name], name=f"{out_name}/Identity"))
        outs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [BATCH, *shape.dims]))
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64 if shape.kind == "tokens" else TensorProto.FLOAT,
                                         [BATCH, *(raw.dims if k == 0 else shape.dims)])
           for k, (n, (_, shape)) in enumerate(zip(names, graph.inputs))]
    g = helper.make_graph(e.nodes, spec.model.name, ins, outs, e.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="nnc",
                              producer_version=__version__)
    model.ir_version = min(model.ir_version, 10)  # readable by onnxruntime releases of the last two years
    meta = {"nnc_version": __version__, "spec_name": spec.model.name, "spec_sha256": spec.sha256,
            "classes": json.dumps(classes), "input_layout": str(raw), "output": outs[0].name,
            "preprocessing": _preprocessing_note(graph, stats), "data_source": spec.data.source.kind,
            "predicts": LOSSES[spec.loss.kind].predicts}  # class, labels (bce) or values (regression): nnc infer
    if tokens:
        meta["vocab"] = str(raw.vocab)
    if raw.kind == "image":
        pixel_max = SOURCES[spec.data.source.kind].pixel_max
        meta["pixel_max"] = "unknown" if pixel_max is None else f"{pixel_max:g}"
    helper.set_model_props(model, meta)
    return model


def input_names(graph: Graph) -> list[str]:
    """The ONNX graph's inputs: `input` for a model of one input (as before several existed),
    else each input's own name."""
    return [INPUT] if len(graph.inputs) == 1 else [name for name, _ in graph.inputs]


def output_names(graph: Graph, probabilities: bool = False) -> list[str]:
    """`scores` (`probabilities`) for a model of one output, else each output's own name."""
    if len(graph.outputs) == 1:
        return ["probabilities" if probabilities else "scores"]
    return [name for name, _, _ in graph.outputs]


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
