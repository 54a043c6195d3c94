"""`nnc export --quantize int8`: onnxruntime's quantization of the verified fp32 graph, judged
on held-out data before anything is written.

A graph with convolutions is quantized statically: int8 weights per output channel, int8
activations whose ranges are calibrated on the training split's first examples (QDQ format,
which onnxruntime's CPU provider fuses into int8 kernels). A graph of dense and recurrent layers
only is quantized dynamically (int8 weights; activation ranges measured per call), its Gemm
nodes rewritten as MatMul + Add first (onnxruntime's dynamic quantizer takes MatMul, not Gemm).
Both keep the graph's input, output and metadata (preprocessing inside, class names), so `nnc
infer` runs either model. The int8 model's accuracy is measured beside the fp32 one's on the
test split (the validation split when there is no test split); a drop past the limit refuses.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnc.compiler.graph import Graph
from nnc.compiler.onnx_graph import INPUT
from nnc.compiler.vocab.losses import LOSSES
from nnc.diagnostics import NncError
from nnc.runtime.data import Splits

CALIBRATION_BATCH = 64
STATIC_OPS = ("Conv", "ConvTranspose")  # a graph with one of these is quantized statically


@dataclass(frozen=True)
class Quantized:
    data: bytes  # the int8 model, serialized
    method: str  # "static" or "dynamic"
    calibrated: int  # training examples the activation ranges came from (0: dynamic)
    split: str  # the split the two models were scored on
    n: int  # its examples
    fp32: dict  # {"accuracy": .. or None, "mse": .. or None}
    int8: dict
    fp32_bytes: int

    @property
    def drop(self) -> float | None:
        """Accuracy points lost (negative: gained); None for a regression model."""
        a, b = self.fp32["accuracy"], self.int8["accuracy"]
        return None if a is None else 100 * (a - b)


def method_for(fp32) -> str:
    return "static" if any(n.op_type in STATIC_OPS for n in fp32.graph.node) else "dynamic"


def quantize(graph: Graph, fp32, splits: Splits, probabilities: bool = False, calibrate: int = 512) -> Quantized:
    """The int8 model of the ModelProto `fp32` (verified against PyTorch by runtime/export.py)."""
    held = splits.test if len(splits.test) else splits.val
    if not len(held):
        raise NncError(f"{graph.spec.model.name}: its spec holds no test or validation examples (data test 0, val 0) "
                       "to judge the int8 model on; quantize a run whose spec keeps some")
    loss = LOSSES[graph.spec.loss.kind]
    # bce predicts labels: a logit > 0 is a yes; other classifiers: the argmax
    judge_by = ("labels" if loss.predicts == "labels" else "class") if loss.classification else None
    if judge_by == "labels" and probabilities:
        raise NncError(f"{graph.spec.model.name}: --probabilities ends the graph with a softmax, which a "
                       f"{graph.spec.loss.kind} model's labels are not read from, so its int8 accuracy cannot be "
                       "judged; quantize it without --probabilities")
    method = method_for(fp32)
    with tempfile.TemporaryDirectory(prefix="nnc-quantize-") as tmp, _quiet():
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        if method == "static":
            _static(fp32, src, out, splits.train.x[:calibrate])
        else:
            _dynamic(fp32, src, out)
        data = same_interface(fp32, out.read_bytes(), method)
    raw = fp32.SerializeToString()
    return Quantized(data, method, min(calibrate, len(splits.train)) if method == "static" else 0,
                     "test" if len(splits.test) else "val", len(held),
                     score(raw, held.x, held.y, judge_by), score(data, held.x, held.y, judge_by), len(raw))


def _static(fp32, src: Path, out: Path, calibration: np.ndarray) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not len(calibration):
        raise NncError("static quantization calibrates on the training split, which is empty here")

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i:i + CALIBRATION_BATCH] for i in range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {INPUT: x}

    onnx.save(fp32, str(src))
    # onnxruntime's pre-processing first (shape inference, and its graph optimizations: batch norm
    # folded into the convolutions, which the quantizer would otherwise quantize on their own), then
    # uint8 activations and int8 weights (U8S8) in QDQ form, the pairing x86 int8 kernels take
    # (bench/quantize.py, docs/benchmarks.md: ResNet-18 at batch 16 3.2x fp32 this way, 0.7x
    # without the pre-processing, 0.7x with int8 activations)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ready = src.with_name("pre.onnx")
    quant_pre_process(str(src), str(ready))
    quantize_static(str(ready), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _dynamic(fp32, src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(gemm_as_matmul(fp32), str(src))
    quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8)


def same_interface(fp32, data: bytes, method: str) -> bytes:
    """The int8 model with the fp32 one's metadata (class names, input layout, preprocessing: what
    `nnc infer` reads), not the quantizer's own additions, plus a note of how it was quantized."""
    import onnx

    model = onnx.load_from_string(data)
    def names(m):
        return [i.name for i in m.graph.input], [o.name for o in m.graph.output]

    if names(model) != names(fp32):  # onnxruntime's quantizer keeps them; nnc infer relies on it
        raise RuntimeError(f"the quantizer renamed the graph's inputs/outputs: {names(fp32)} -> {names(model)}")
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in fp32.metadata_props}, "quantization": f"int8 {method}"})
    return model.SerializeToString()


def gemm_as_matmul(model):
    """A copy of `model` whose Gemm nodes with a constant B (dense layers: Gemm(x, W, b, transB=1))
    are MatMul(x, W^T) + b: the same function, in the op onnxruntime's dynamic quantizer takes."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    nodes = []
    for n in model.graph.node:
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        plain = a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0 and not a.get("transA", 0)
        if n.op_type != "Gemm" or not plain or len(n.input) != 3 or n.input[1] not in inits or uses[n.input[1]] != 1:
            nodes.append(n)
            continue
        if a.get("transB", 0):
            w = inits[n.input[1]]
            w.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w).T), w.name))
        product = f"{n.output[0]}/matmul"
        nodes.append(helper.make_node("MatMul", [n.input[0], n.input[1]], [product], name=f"{n.name}/matmul"))
        nodes.append(helper.make_node("Add", [product, n.input[2]], list(n.output), name=f"{n.name}/bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def score(model: bytes, x: np.ndarray, y: np.ndarray, judge_by: str | None, batch: int = 256) -> dict:
    """Accuracy (judge_by "class": the argmax; "labels": each logit's sign against targets > 0.5)
    or mean squared error (None: a regression model) of the ONNX model on (x, y)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    out = np.concatenate([sess.run(None, {INPUT: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
    if judge_by == "class":
        return {"accuracy": float((out.argmax(1) == y).mean()), "mse": None}
    if judge_by == "labels":
        return {"accuracy": float(((out > 0) == (y.reshape(out.shape) > 0.5)).mean()), "mse": None}
    return {"accuracy": None, "mse": float(np.mean((out.reshape(y.shape) - y) ** 2))}


def judge(q: Quantized, max_drop: float) -> None:
    """NncError (exit 1) when the int8 model loses more than `max_drop` accuracy points."""
    if q.drop is not None and q.drop > max_drop:
        raise NncError(f"the int8 model's {q.split} accuracy is {100 * q.int8['accuracy']:.2f}% against the fp32 "
                       f"model's {100 * q.fp32['accuracy']:.2f}% ({q.n} examples): a drop of {q.drop:.2f} points, "
                       f"more than --max-drop {max_drop:g}; nothing was written. Raise --max-drop to accept it, "
                       "or ship the fp32 model (nnc export without --quantize)")


def summary(q: Quantized, max_drop: float) -> str:
    how = (f"static: int8 weights per channel, activations calibrated on {q.calibrated} training examples"
           if q.method == "static" else "dynamic: int8 weights per channel, activation ranges measured per call")
    if q.drop is not None:
        judged = (f"{q.split} accuracy {100 * q.fp32['accuracy']:.2f}% (fp32) -> {100 * q.int8['accuracy']:.2f}% "
                  f"(int8), {abs(q.drop):.2f} points {'lost' if q.drop >= 0 else 'gained'} (limit {max_drop:g})")
    else:
        judged = f"{q.split} mean squared error {q.fp32['mse']:.4g} (fp32) -> {q.int8['mse']:.4g} (int8)"
    return (f"int8 ({how}); {judged} on {q.n} examples; {q.fp32_bytes / 1024:,.0f} KB -> {len(q.data) / 1024:,.0f} KB "
            f"({q.fp32_bytes / len(q.data):.1f}x smaller)")


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs advice through the root logger ("run pre-processing", ...):
    nnc reports what matters itself."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
