"""Checkpoints: one safetensors file, written atomically, enough on its own to evaluate,
resume or export a model. No pickle is ever loaded.

Tensors:   model/<param or buffer>       the model's state_dict
           pre/mean, pre/std, pre/proj   preprocessing statistics (training split only)
           state/...                     optimizer, EMA and RNG state (in `last` checkpoints)
Metadata:  format, nnc_version, spec_text, spec_name, overrides, classes, info (JSON:
           epoch, step, metrics, ...), state_meta (JSON: the non-tensor optimizer state)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnc.compiler.diagnostics import NncError

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

    def spec(self):
        from nnc.compiler.spec import load_text

        return load_text(self.spec_text, self.spec_name, self.overrides)


def save(path: str | Path, ckpt: Checkpoint) -> None:
    """Write `ckpt` atomically: a temp file in the same folder, fsync, rename."""
    import torch
    from safetensors.torch import save as st_save

    from nnc import __version__

    tensors = {f"model/{k}": v.detach().to("cpu").contiguous() for k, v in ckpt.model.items()}
    tensors.update({f"pre/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in ckpt.preprocess.items()})
    tensors.update({f"state/{k}": v.detach().to("cpu").contiguous() for k, v in ckpt.state.items()})
    meta = {
        "format": FORMAT, "nnc_version": __version__, "spec_text": ckpt.spec_text, "spec_name": ckpt.spec_name,
        "overrides": json.dumps(list(ckpt.overrides)), "classes": json.dumps(ckpt.classes),
        "info": json.dumps(ckpt.info), "state_meta": json.dumps(ckpt.state_meta),
    }
    data = st_save(tensors, metadata=meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        raise NncError(f"{path}: not a readable safetensors checkpoint ({e}); the file may be truncated") from None
    except (OSError, ValueError) as e:
        raise NncError(f"{path}: cannot read checkpoint ({e})") from None

    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        return Checkpoint(
            spec_text=meta["spec_text"], spec_name=meta.get("spec_name", str(path)), model=part("model/"),
            preprocess={k: v.numpy() for k, v in part("pre/").items()},
            classes=json.loads(meta.get("classes", "null")), overrides=tuple(json.loads(meta.get("overrides", "[]"))),
            info=json.loads(meta.get("info", "{}")), state=part("state/"),
            state_meta=json.loads(meta.get("state_meta", "{}")),
        )
    except (KeyError, json.JSONDecodeError) as e:
        raise NncError(f"{path}: damaged checkpoint metadata ({e})") from None
