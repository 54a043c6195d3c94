"""Checkpoints: one safetensors file, written atomically, enough on its own to evaluate,
resume or export a model. No pickle is ever loaded.

Tensors:   model/<param or buffer>       the model's state_dict
           pre/mean, pre/std, pre/proj   preprocessing statistics (training split only)
           state/...                     optimizer, EMA and RNG state (in `last` checkpoints)
Metadata:  format, nnc_version, spec_text, spec_name, overrides, classes, info (JSON:
           epoch, step, metrics, ...), state_meta (JSON: the non-tensor optimizer state),
           checksum (JSON: sha256 of the model/ + pre/ tensors and of the state/ ones, their
           names, dtypes, shapes and bytes; verified on load: flipped bits are a damaged file)
           spec_files (JSON, only for a spec with includes: the included files' texts)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnc.diagnostics import NncError
from nnc.files import write_atomic

FORMAT = "nnc-checkpoint-1"


@dataclass
class Checkpoint:
    spec_text: str
    spec_name: str
    model: dict[str, Any]  # name -> torch.Tensor
    preprocess: dict[str, np.ndarray] = field(default_factory=dict)
    classes: list[str] | None = None
    overrides: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)  # epoch, step, metrics, ...
    state: dict[str, Any] = field(default_factory=dict)  # name -> torch.Tensor (resume only)
    state_meta: dict[str, Any] = field(default_factory=dict)
    path: str = field(default="", compare=False)  # the file it was read from (for messages)
    spec_files: dict[str, str] = field(default_factory=dict)  # the files the spec includes: path -> text

    def spec(self):
        from nnc.compiler.load import load_text

        return load_text(self.spec_text, self.spec_name, self.overrides, self.spec_files)

    def check_against(self, graph, model=None) -> None:
        """Every tensor the spec's model and preprocessing need, with the shape the graph gives it,
        and nothing else: the one check before weights are loaded, exported or compiled. A
        damaged file or one whose tensors belong to another spec is an NncError naming the tensor.
        `model`: the module already built from `graph`, if there is one (else built on the meta device)."""
        where = self.path or self.spec_name
        shapes = ({k: tuple(v.shape) for k, v in model.state_dict().items()} if model is not None
                  else expected_model_shapes(graph))
        want = {f"model/{k}": v for k, v in shapes.items()}
        want.update({f"pre/{k}": v for k, v in expected_preprocess_shapes(graph).items()})
        have = {f"model/{k}": tuple(v.shape) for k, v in self.model.items()}
        have.update({f"pre/{k}": tuple(np.shape(v)) for k, v in self.preprocess.items()})
        name = graph.spec.model.name
        problems = [f"{k} has shape {have[k]}, but {name} expects {want[k]}"
                    for k in want if k in have and have[k] != want[k]]
        problems += [f"{k} (shape {want[k]}) is missing" for k in want if k not in have]
        problems += [f"{k} (shape {have[k]}) is not a tensor of {name}" for k in have if k not in want]
        if problems:
            more = f"; ... and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise NncError(f"{where}: the checkpoint's tensors do not match its spec: {'; '.join(problems[:3])}{more}. "
                           "The file is damaged, or its tensors come from another spec")


def expected_model_shapes(graph) -> dict[str, tuple[int, ...]]:
    """name -> shape of the state_dict `torch_module.build_model(graph)` has: the same modules,
    built on the meta device without the spec's initialization (no memory: VGG16 in ms)."""
    import torch

    from nnc.compiler.torch_module import build_model

    with torch.device("meta"):
        net = build_model(graph, init=False)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def expected_preprocess_shapes(graph) -> dict[str, tuple[int, ...]]:
    """The statistics `runtime/train` fits (runtime/preprocess.fit): mean and std shaped like one
    raw example, and for pca / whiten a (raw features, kept features) projection."""
    raw = graph.spec.model.input
    steps = {c.kind for c in graph.spec.data.preprocess}
    if not steps or raw.kind == "tokens":
        return {}
    out = {"mean": tuple(raw.dims), "std": tuple(raw.dims)}
    if steps & {"pca", "whiten"}:
        out["proj"] = (raw.dims[0], graph.input.dims[0])
    return out


def checksum(tensors: dict) -> str:
    """sha256 over the tensors in name order: each one's name, dtype, shape and bytes."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")  # (the buffer, not a copy)
    return h.hexdigest()


def _checksums(tensors: dict) -> dict[str, str]:
    state = {k: v for k, v in tensors.items() if k.startswith("state/")}
    return {"weights": checksum({k: v for k, v in tensors.items() if k not in state}), "state": checksum(state)}


def save(path: str | Path, ckpt: Checkpoint) -> None:
    """Write `ckpt` atomically: a temp file in the same folder, fsync, rename."""
    import torch
    from safetensors.torch import save as st_save

    from nnc.version import __version__

    tensors = {f"model/{k}": v.detach().to("cpu").contiguous() for k, v in ckpt.model.items()}
    tensors.update({f"pre/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in ckpt.preprocess.items()})
    tensors.update({f"state/{k}": v.detach().to("cpu").contiguous() for k, v in ckpt.state.items()})
    meta = {
        "format": FORMAT, "nnc_version": __version__, "spec_text": ckpt.spec_text, "spec_name": ckpt.spec_name,
        "overrides": json.dumps(list(ckpt.overrides)), "classes": json.dumps(ckpt.classes),
        "info": json.dumps(ckpt.info), "state_meta": json.dumps(ckpt.state_meta),
        "checksum": json.dumps(_checksums(tensors)),
    }
    if ckpt.spec_files:  # a spec with includes: the checkpoint carries them, so it needs no other file
        meta["spec_files"] = json.dumps(ckpt.spec_files)
    data = st_save(tensors, metadata=meta)
    write_atomic(Path(path), data, "checkpoint")


def load(path: str | Path, with_state: bool = False) -> Checkpoint:
    """Read a checkpoint, or raise an NncError that says what is wrong with the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise NncError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise NncError(f"{path}: not an nnc checkpoint (no '{FORMAT}' metadata)")
            tensors = {k: f.get_tensor(k) for k in f.keys() if with_state or not k.startswith("state/")}
    except SafetensorError as e:
        raise NncError(_not_a_checkpoint(path) or f"{path}: not a readable safetensors checkpoint ({e}); "
                       "the file may be truncated") from None
    except (OSError, ValueError) as e:
        raise NncError(f"{path}: cannot read checkpoint ({e})") from None
    import torch

    _verify(path, meta, tensors, with_state)
    for k, t in tensors.items():  # weights saved by a run gone wrong
        if k.startswith(("model/", "pre/")) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NncError(f"{path}: {k} holds NaN or infinite values; the checkpoint is damaged")

    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        return Checkpoint(
            spec_text=meta["spec_text"], spec_name=meta.get("spec_name", str(path)), model=part("model/"),
            preprocess={k: v.numpy() for k, v in part("pre/").items()},
            classes=json.loads(meta.get("classes", "null")), overrides=tuple(json.loads(meta.get("overrides", "[]"))),
            info=json.loads(meta.get("info", "{}")), state=part("state/"),
            state_meta=json.loads(meta.get("state_meta", "{}")), path=str(path),
            spec_files=json.loads(meta.get("spec_files", "{}")),
        )
    except (KeyError, json.JSONDecodeError) as e:
        raise NncError(f"{path}: damaged checkpoint metadata ({e})") from None


def _verify(path: Path, meta: dict, tensors: dict, with_state: bool) -> None:
    """The tensors read are the tensors written (a checkpoint without a checksum predates it)."""
    try:
        stored = json.loads(meta["checksum"]) if "checksum" in meta else {}
    except json.JSONDecodeError:
        stored = {"weights": "unreadable"}
    got = _checksums(tensors)
    parts = [p for p in ("weights", "state") if p in stored and (with_state or p == "weights")]
    bad = [p for p in parts if stored[p] != got[p]]
    if bad:
        what = "its weights" if bad == ["weights"] else "its optimizer state" if bad == ["state"] else "its tensors"
        raise NncError(f"{path}: damaged checkpoint: {what} do not match the checksum stored with them (flipped "
                       "bits on the disk or a copy gone wrong); use another copy, or the run's other checkpoint")


def _not_a_checkpoint(path: Path) -> str | None:
    """What a file that is no safetensors file is, when it is something nnc knows."""
    head = path.read_bytes()[:64] if path.stat().st_size else b""
    # an ONNX file is a protobuf: field 1 (ir_version) first, then the producer's name
    if path.suffix == ".onnx" or head[:1] == b"\x08" and (b"\x12\x03nnc" in head or b"\x12\x07pytorch" in head):
        return (f"{path}: this is an ONNX model, not a checkpoint; this command takes a run's .safetensors "
                "(`nnc infer` runs ONNX models)")
    if path.suffix == ".nnspec":
        return f"{path}: this is a spec, not a checkpoint; this command takes a run's .safetensors"
    return None

