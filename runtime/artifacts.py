"""One loader for what the commands are given: a spec, a checkpoint, or an ONNX model.

A spec is checked into a Graph and builds a freshly initialized model; a checkpoint carries its
spec, weights, preprocessing statistics and class names, and is checked against that spec before
anything uses it; an ONNX model is run by onnxruntime (runtime/infer.py). A file of another kind
than the command takes is named for what it is (checkpoint.load and the spec reader sniff it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nnc.compiler.checks import check
from nnc.compiler.graph import Graph
from nnc.compiler.load import load_spec
from nnc.diagnostics import EXIT_USAGE, NncError
from nnc.runtime import checkpoint as ckpt

SPEC, CHECKPOINT, ONNX = "spec", "checkpoint", "onnx"


@dataclass
class Artifact:
    path: str
    kind: str  # SPEC, CHECKPOINT or ONNX
    graph: Graph | None = None  # None for an ONNX model
    checkpoint: ckpt.Checkpoint | None = None
    stats: dict = field(default_factory=dict)  # preprocessing statistics (numpy), a checkpoint's
    classes: list[str] | None = None

    def model(self, device: str = "cpu"):
        """The torch module in eval mode: the checkpoint's weights, or a spec's fresh initialization."""
        from nnc.compiler.torch_module import build_model
        from nnc.runtime.device import pick_device

        model = build_model(self.graph)
        if self.checkpoint is not None:  # (checked against the spec by `load`)
            model.load_state_dict(self.checkpoint.model)
        return model.to(pick_device(device)).eval()


def kind_of(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return SPEC if suffix == ".nnspec" else ONNX if suffix == ".onnx" else CHECKPOINT


def load(path: str, accept: tuple[str, ...] = (SPEC, CHECKPOINT), overrides: tuple[str, ...] = ()) -> Artifact:
    """What `path` names, loaded and checked. `overrides` (--set) apply to bare specs only."""
    from nnc.compiler.library import resolve

    kind = kind_of(path)
    if kind == CHECKPOINT and SPEC in accept and resolve(path) != path:  # a library name: `nnc export alexnet`
        kind = SPEC
    if kind not in accept:  # the checkpoint reader names a spec or an ONNX model for what it is
        kind = CHECKPOINT
    if overrides and kind != SPEC:
        raise NncError(f"--set applies to bare specs (.nnspec) only, and {path} is a checkpoint: it keeps "
                       "the spec it was trained with", exit_code=EXIT_USAGE)
    if kind == SPEC:
        return Artifact(path, SPEC, check(load_spec(path, overrides)))
    if kind == ONNX:
        return Artifact(path, ONNX)
    ck = ckpt.load(path)
    graph = check(ck.spec())
    ck.check_against(graph)  # every later use (weights, export, compile) would fail on a mismatch: say so now
    return Artifact(path, CHECKPOINT, graph, ck, dict(ck.preprocess), ck.classes)
