"""`nnc ensemble`: the average of several models' class probabilities, as the notes recommend
(same model with different initializations, top models of a search, checkpoints of one run).

Members must read the same data the same way: the same source, input and split. The split is
seeded by `data seed`, so members with different data seeds were tested on examples another
member trained on; that is refused rather than reported as a gain. `train seed` only drives
initialization and shuffling: the same spec trained with different train seeds is the textbook
ensemble. Each member keeps its own preprocessing; the exported ONNX graph takes raw inputs and
returns the averaged probabilities, with metadata like a single model's (nnc version, class
names, input layout) and each member's spec hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnc.compiler.graph import Graph
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.sources import SOURCES
from nnc.diagnostics import NncError
from nnc.files import write_atomic
from nnc.runtime import artifacts, preprocess
from nnc.runtime.export import check_out_path, fits_one_onnx_file
from nnc.runtime.feeds import raw_split
from nnc.runtime.reads import check_reads


@dataclass
class Member:
    path: str
    graph: Graph
    model: torch.nn.Module
    stats: dict  # preprocessing statistics (numpy)
    classes: list[str] | None
    checkpoint: object = None  # the Checkpoint (its recorded spec file: runtime/reads.py)


def _split_key(graph: Graph) -> tuple:
    spec = graph.spec
    return (str(spec.data.source), spec.data.val, spec.data.test, spec.data.seed, str(spec.model.input))


def load_members(paths: list[str]) -> list[Member]:
    if len(paths) < 2:
        raise NncError("an ensemble needs at least two checkpoints")
    seen: dict[Path, str] = {}
    for p in paths:  # a member listed twice would silently count double
        if (key := Path(p).resolve()) in seen:
            raise NncError(f"{p} is listed twice ({seen[key]}); each checkpoint is one member of the ensemble")
        seen[key] = str(p)
    members = []
    for p in paths:
        art = artifacts.load(p, accept=(artifacts.CHECKPOINT,))
        if not LOSSES[art.graph.spec.loss.kind].classification:
            raise NncError(f"{p}: {art.graph.spec.loss.kind} is not a classification loss; an ensemble averages "
                           "class probabilities")
        if art.graph.several or art.graph.output.kind != "vector":
            raise NncError(f"{p}: an ensemble averages the class probabilities of models of one input and one vector "
                           f"of class scores; this one reads {len(art.graph.inputs)} input(s) and makes {art.graph.output}")
        members.append(Member(str(p), art.graph, art.model("cpu"), art.stats, art.classes, art.checkpoint))
    first = members[0]
    names = ("data source", "val fraction", "test fraction", "data seed (it fixes the split)", "input")
    for m in members[1:]:
        for name, a, b in zip(names, _split_key(first.graph), _split_key(m.graph)):
            if a != b:
                raise NncError.at(None, f"{m.path} and {first.path} differ in {name}: {b} vs {a}; ensemble members must "
                               "share their data, input and split",
                               help="train members with the same data line (data seed included), varying the "
                                    "train seed, width, dropout or learning rate, or use checkpoints of one run")
        if m.graph.output.dims != first.graph.output.dims or m.classes != first.classes:
            raise NncError(f"{m.path} predicts {m.graph.output} ({m.classes}), {first.path} {first.graph.output} "
                           f"({first.classes}): members must predict the same classes")
    return members


@torch.no_grad()
def probabilities(m: Member, x: np.ndarray) -> torch.Tensor:
    """The member's softmax over raw inputs x, its own preprocessing applied."""
    t = torch.as_tensor(np.ascontiguousarray(x))
    if m.stats and t.is_floating_point():
        t = preprocess.apply({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in m.stats.items()}, t)
    return torch.cat([torch.softmax(m.model(t[i:i + 1024]).float(), 1) for i in range(0, len(t), 1024)])


def evaluate_ensemble(paths: list[str], split: str = "test", allow_read: tuple[str, ...] = ()) -> dict:
    """Each member's and the average's accuracy and loss on the members' shared split (read as the
    first member's spec says, if the user named that data), batch by batch: from memory, or from
    disk when the data is streamed."""
    members = load_members(paths)
    check_reads(members[0].checkpoint, members[0].graph.spec, allow_read)
    n, sums = 0, np.zeros((len(members) + 1, 2))  # per member, then the average: correct, -log p
    for x, y in raw_split(members[0].graph, split):
        x = x.astype(np.float32) if x.dtype.kind in "fu" else x  # (raw images arrive as uint8)
        y = torch.as_tensor(y)
        ps = [probabilities(m, x) for m in members]
        sums += [_sums(p, y) for p in (*ps, sum(ps) / len(ps))]
        n += len(y)
    if not n:
        raise NncError(f"the {split} split is empty")
    rows = [{"accuracy": c / n, "loss": nll / n, "checkpoint": m.path} for (c, nll), m in zip(sums, members)]
    return {"split": split, "n": n, "members": rows, "mean_accuracy": float(np.mean([r["accuracy"] for r in rows])),
            "accuracy": sums[-1][0] / n, "loss": sums[-1][1] / n}


def _sums(p: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Correct predictions and cross-entropy (negative log of the probability of the label),
    summed over the examples of probabilities p."""
    nll = -torch.log(p.gather(1, y[:, None]).clamp_min(1e-12)).sum()
    return float((p.argmax(1) == y).sum()), float(nll)


# ---------------------------------------------------------------- ONNX


def _emit_members(members: list[Member]):
    """One graph: each member emitted by nnc's exporter (probabilities out, preprocessing in),
    names prefixed m0/, m1/, ..., all reading the shared raw `input`; then Sum / k."""
    import onnx
    from onnx import compose, helper

    from nnc.compiler.onnx_graph import INPUT, emit

    nodes, inits = [], []
    outs = []
    for i, m in enumerate(members):
        proto = emit(m.graph, m.model.state_dict(), m.stats, m.classes, probabilities=True)
        proto = compose.add_prefix(proto, f"m{i}/")
        g = proto.graph
        for n in g.node:
            n.input[:] = [INPUT if s == f"m{i}/{INPUT}" else s for s in n.input]
        nodes.extend(g.node)
        inits.extend(g.initializer)
        outs.append(g.output[0].name)
        first = proto
    k = helper.make_tensor("ensemble/k", onnx.TensorProto.FLOAT, [], [float(len(members))])
    nodes.append(helper.make_node("Sum", outs, ["ensemble/sum"], name="ensemble/Sum"))
    nodes.append(helper.make_node("Div", ["ensemble/sum", "ensemble/k"], ["probabilities"], name="ensemble/Div"))
    inp = first.graph.input[0]
    inp.name = INPUT
    out = helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [inp.type.tensor_type.shape.dim[0].dim_param, members[0].graph.output.features])
    graph = helper.make_graph(nodes, "ensemble", [inp], [out], inits + [k])
    model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="nnc")
    model.ir_version = first.ir_version
    return model, "nnc.compiler.onnx_graph"


class _Average(torch.nn.Module):
    """Raw inputs -> each member's preprocessing, model and softmax -> their mean."""

    def __init__(self, members: list[Member]):
        super().__init__()
        self.models = torch.nn.ModuleList(m.model for m in members)
        for i, m in enumerate(members):
            for k in ("mean", "std", "proj"):
                self.register_buffer(f"pre{i}_{k}", torch.from_numpy(np.asarray(m.stats[k], np.float32))
                                     if k in m.stats else None)

    def forward(self, x):
        total = 0
        for i, model in enumerate(self.models):
            t = x
            mean = getattr(self, f"pre{i}_mean")
            if mean is not None:
                t = (t - mean) / getattr(self, f"pre{i}_std")
            proj = getattr(self, f"pre{i}_proj")
            if proj is not None:
                t = t @ proj
            total = total + torch.softmax(model(t), 1)
        return total / len(self.models)


def _torch_export(members: list[Member]):
    """Fallback when nnc's emitter cannot export a member: torch's TorchScript exporter."""
    import io

    import onnx

    module = _Average(members).eval()
    dims = members[0].graph.spec.model.input.dims
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(2, *dims),), buf, input_names=["input"], output_names=["probabilities"],
                      dynamic_axes={"input": {0: "N"}, "probabilities": {0: "N"}}, opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue()), "torch.onnx.export (TorchScript)"


def _metadata(model, members: list[Member]) -> None:
    """The keys a single model's export carries (compiler/onnx_graph.py), for the ensemble:
    one spec hash per member instead of one."""
    import json

    from onnx import helper

    from nnc.version import __version__

    first = members[0]
    tokens = first.graph.spec.model.input.kind == "tokens"
    meta = {"nnc_version": __version__, "spec_name": "ensemble",
            "members": json.dumps([{"spec_name": m.graph.spec.model.name, "spec_sha256": m.graph.spec.sha256,
                                    "overrides": list(m.graph.spec.overrides)} for m in members]),
            "members_spec_sha256": json.dumps([m.graph.spec.sha256 for m in members]),
            "classes": json.dumps(first.classes), "input_layout": str(first.graph.spec.model.input),
            "output": "probabilities", "combine": f"mean of the {len(members)} members' probabilities",
            "preprocessing": "each member's, inside the graph" if any(m.stats for m in members) and not tokens else "none",
            "data_source": first.graph.spec.data.source.kind}  # (load_members made sure the members share their data)
    inp = first.graph.spec.model.input
    if tokens:
        meta["vocab"] = str(inp.vocab)
    if inp.kind == "image":  # `nnc infer` scales image files to the training data's pixel range
        pixel_max = SOURCES[first.graph.spec.data.source.kind].pixel_max
        meta["pixel_max"] = "unknown" if pixel_max is None else f"{pixel_max:g}"
    del model.metadata_props[:]
    helper.set_model_props(model, meta)


def export_onnx(paths: list[str], out: str | Path, split: str = "test", allow_read: tuple[str, ...] = ()) -> dict:
    """Write one ONNX graph (raw input -> averaged probabilities) after checking it with
    onnxruntime against PyTorch on the split's inputs."""
    import onnx
    import onnxruntime as ort

    check_out_path(out)
    members = load_members(paths)
    fits_one_onnx_file(sum(m.graph.n_params for m in members), "the ensemble")
    try:
        model, how = _emit_members(members)
    except (ImportError, NotImplementedError, KeyError, AttributeError):
        model, how = _torch_export(members)
    _metadata(model, members)
    onnx.checker.check_model(model)
    check_reads(members[0].checkpoint, members[0].graph.spec, allow_read)
    x, _ = next(raw_split(members[0].graph, split, 256, 256), (np.zeros((0, *members[0].graph.spec.model.input.dims)), None))
    x = np.ascontiguousarray(x.astype(np.float32))
    want = sum(probabilities(m, x) for m in members).numpy() / len(members)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.abs(got - want).max())
    if got.shape != want.shape or not diff <= 1e-4:
        raise NncError(f"the exported ensemble disagrees with PyTorch (max |diff| {diff:.3g}); nothing was written")
    out = Path(out)
    write_atomic(out, model.SerializeToString(), "ONNX model")
    return {"path": str(out), "max_abs_diff": diff, "checked_on": len(x), "exporter": how}
