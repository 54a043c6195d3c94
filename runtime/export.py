"""`nnc export`: emit the ONNX graph (compiler/onnx_graph.py), verify it against PyTorch with
onnxruntime, then write it atomically. Nothing is written unless the check passes."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnc.compiler.graph import Graph
from nnc.compiler.onnx_graph import emit, input_names
from nnc.compiler.opsets import DEFAULT_OPSET, MIN_OPSET
from nnc.diagnostics import NncError
from nnc.files import file_in_the_way, write_atomic
from nnc.runtime import preprocess
from nnc.runtime.artifacts import SPEC, Artifact

# max |ort - torch| <= RTOL * max|torch| + ATOL: relative to the output's scale, so that a model
# whose outputs are tiny (two_layer's fresh ones are ~5e-6) is checked as strictly as any other;
# ATOL only keeps an all-zero output from needing an exact match
RTOL, ATOL = 1e-4, 1e-9


@dataclass(frozen=True)
class Exported:
    model: Any  # onnx.ModelProto
    output: str
    check: dict  # batch size -> {"max_abs": .., "max_rel": ..}


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


def random_inputs(graph: Graph, stats: dict, batch: int, seed: int = 0) -> np.ndarray:
    """Raw inputs that preprocessing maps to roughly N(0, 1) (token ids for token inputs); for a
    model of several inputs, a list of them in the inputs' order."""
    rng = np.random.default_rng(seed + batch)
    out = []
    for k, inp in enumerate(i.shape for i in graph.spec.model.inputs):
        if inp.kind == "tokens":
            out.append(rng.integers(0, inp.vocab, (batch, *inp.dims), dtype=np.int64))
            continue
        z = rng.standard_normal((batch, *inp.dims)).astype(np.float32)
        if stats and k == 0:
            z = z * stats["std"] + stats["mean"]
        out.append(z.astype(np.float32))
    return out[0] if len(out) == 1 else out


def feed(graph: Graph, x) -> dict[str, np.ndarray]:
    """The ONNX graph's inputs by name, from random_inputs' array (or list of them)."""
    return dict(zip(input_names(graph), x if isinstance(x, list) else [x]))


def torch_reference(model, stats: dict, x, probabilities: bool):
    """The module's output on raw `x` (preprocessed first, as the exported graph does); for a
    model of several inputs or outputs, `x` is a list and so is the result."""
    import torch

    xs = x if isinstance(x, list) else [x]
    with torch.no_grad():
        ts = [torch.from_numpy(a) for a in xs]
        if ts[0].is_floating_point() and stats:
            ts[0] = preprocess.apply({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in stats.items()}, ts[0])
        y = model(*ts)
        ys = list(y.parts) if hasattr(y, "parts") else [y]
        if probabilities:
            ys = [torch.softmax(t, 1 if t.dim() == 2 or t.dim() == 4 else -1) for t in ys]
    out = [t.numpy() for t in ys]
    return out[0] if len(out) == 1 and not hasattr(y, "parts") else out


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
        got = sess.run(None, feed(graph, x))
        want = torch_reference(torch_model, stats, x, probabilities)
        want = want if isinstance(want, list) else [want]
        rs = [compare(g, w) for g, w in zip(got, want)]
        r = next((r for r in rs if not r["ok"]), max(rs, key=lambda r: r["max_rel"]))
        report[b] = r
        if not r["ok"]:
            raise NncError(f"the exported graph disagrees with PyTorch at batch {b}: max abs error "
                           f"{r['max_abs']:.3g}, max relative error {r['max_rel']:.3g} (outputs up to "
                           f"{r['scale']:.3g}; tolerance {RTOL:g} * that + {ATOL:g}); nothing was written")
    return report


ONNX_LIMIT = 2 ** 31 - 2 ** 24  # protobuf's 2 GiB, less room for the graph itself


def fits_one_onnx_file(n_params: int, name: str) -> None:
    """An ONNX model is one protobuf message, at most 2 GiB (nnc writes no external data files)."""
    from nnc.compiler.footprint import FLOAT, size

    if n_params * FLOAT > ONNX_LIMIT:
        raise NncError(f"{name}: its weights take {size(n_params * FLOAT)} in float32, and an ONNX file holds at most "
                       "2 GiB (protobuf's limit; nnc writes no external data files); nothing was written")


def export(graph: Graph, torch_model, stats: dict | None, classes: list[str] | None, out: str | Path | None,
           opset: int = DEFAULT_OPSET, probabilities: bool = False, batches=(1, 3)) -> Exported:
    """Emit, check (onnx.checker, then onnxruntime vs torch at two batch sizes), then write atomically."""
    import onnx

    check_opset(opset)
    if out is not None:  # before the (for VGG16: long) emit and check
        check_out_path(out)
    fits_one_onnx_file(graph.n_params, graph.spec.model.name)
    torch_model.eval()
    stats = {k: np.asarray(v) for k, v in (stats or {}).items()}
    model = emit(graph, torch_model.state_dict(), stats, classes, opset, probabilities)
    data = model.SerializeToString()  # once: the checker, onnxruntime and the file share it (VGG16: 550 MB)
    try:
        onnx.checker.check_model(data, full_check=False)
    except onnx.checker.ValidationError as e:  # an emitter bug, not a user error
        raise RuntimeError(f"nnc emitted an invalid ONNX graph: {e}") from e
    report = verify(data, graph, torch_model, stats, probabilities, batches)
    if out is not None:
        write_atomic(Path(out), data, "ONNX model")
    return Exported(model, model.graph.output[0].name, report)


def export_artifact(art: Artifact, out: str | None, opset: int, probabilities: bool) -> Exported:
    """A checkpoint's trained model with its statistics inside, or a bare spec's fresh one."""
    if art.kind == SPEC and art.graph.input != art.graph.spec.model.input:
        raise NncError(f"{art.path}: its preprocessing changes the input to {art.graph.input}, and a bare spec has "
                       "no fitted statistics; export a trained checkpoint instead")
    fits_one_onnx_file(art.graph.n_params, art.graph.spec.model.name)  # before the model is built
    if art.kind == SPEC:  # (a checkpoint's tensors are read already)
        import torch

        from nnc.runtime.device import refuse_if_too_big

        refuse_if_too_big(art.graph, torch.device("cpu"), "export")
    return export(art.graph, art.model(), art.stats, art.classes, out, opset, probabilities)


def export_int8(art: Artifact, out: str, opset: int, probabilities: bool, max_drop: float,
                allow_read: tuple[str, ...] = ()):
    """`--quantize int8`: the verified fp32 graph (kept in memory), quantized by onnxruntime and
    scored beside it on held-out data; written only when it loses at most `max_drop` points."""
    from nnc.runtime.quantize import judge, quantize

    if art.graph.several:
        raise NncError(f"{art.path}: --quantize int8 takes a model of one input and one output; this one reads or "
                       "writes several (export it in fp32)")
    if art.kind == SPEC and art.graph.spec.model.input.kind != "tokens" and art.graph.spec.data.preprocess:
        # its graph expects preprocessed inputs: calibrating and scoring it on raw data would mislead
        steps = " ".join(c.kind for c in art.graph.spec.data.preprocess)
        raise NncError(f"{art.path}: a bare spec's graph leaves out its `preprocess {steps}` (the statistics come "
                       "from training), so it cannot be calibrated or scored on the raw data; quantize a trained "
                       "checkpoint instead")
    check_out_path(out)
    if art.checkpoint is not None:  # its spec's data paths are read only where the user allows
        from nnc.runtime.reads import check_reads

        check_reads(art.checkpoint, art.graph.spec, allow_read)
    splits = _held_data(art.graph)  # before the export: a data problem is said first
    fp32 = export_artifact(art, None, opset, probabilities)
    q = quantize(art.graph, fp32.model, splits, probabilities)
    judge(q, max_drop)
    write_atomic(Path(out), q.data, "ONNX model")
    return fp32, q


def _held_data(graph, limit: int = 10_000):
    """The splits quantization calibrates and scores on: all of data held in memory; of streamed
    data, the first 512 training examples and the first `limit` of the test and validation splits."""
    from nnc.compiler.data_plan import plan
    from nnc.runtime.data import Splits, load_splits
    from nnc.runtime.feeds import split_samples

    if plan(graph.spec).cache == "memory":
        return load_splits(graph)
    s = split_samples(graph, {"train": 512, "val": limit, "test": limit})
    return Splits(s["train"], s["val"], s["test"], None)


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


