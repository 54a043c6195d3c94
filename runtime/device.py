"""Where a command computes (CUDA when present or asked for, the CPU otherwise) and in what
precision it trains (`train precision`, `channels_last`, `compile`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nnc.diagnostics import NncError


def pick_device(choice: str, asked_by: str = "--device") -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise NncError(f"{asked_by} cuda: no CUDA device is available (use auto or cpu)")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def memory_of(dev: torch.device) -> tuple[int | None, str]:
    """Bytes the device can hold, and its name for messages."""
    from nnc.compiler.footprint import physical_memory

    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return props.total_memory, f"{props.name}'s memory"
    return physical_memory(), "this machine's memory"


def refuse_if_too_big(graph, dev: torch.device, purpose: str) -> None:
    """Before anything is allocated: an NncError with the estimate (compiler/footprint.py) when the
    work cannot fit in the device's memory. `purpose`: "train" (the doctor trains too) or "export"."""
    from nnc.compiler.footprint import estimate, size

    fp = estimate(graph)
    have, where = memory_of(dev)
    # export: the weights three times (torch, the ONNX graph, the onnxruntime session) and a few examples
    need = fp.training if purpose == "train" else 3 * fp.weights + 3 * fp.activations
    if have is None or need <= have:
        return
    parts = fp.training_parts() if purpose == "train" else (
        f"weights {size(fp.weights)} three times (PyTorch, the ONNX graph, onnxruntime's session), "
        f"activations {size(fp.activations)} per example")
    raise NncError(f"{graph.spec.model.name} needs about {size(need)} to {purpose} ({parts}), more than "
                   f"{where} ({size(have)}); nothing was allocated. `nnc show` lists the memory per layer: shrink "
                   "the model" + (", the batch or the data" if purpose == "train" else ""))


@dataclass
class Precision:
    """The autocast type of the forward pass (None: float32) and fp16's gradient scaler."""

    autocast: torch.dtype | None
    scaler: torch.amp.GradScaler | None = None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]


def precision_for(setting: str, dev: torch.device, span=None) -> Precision:
    """`train precision`: auto is bf16 autocast on CUDA and float32 on the CPU; fp16 adds a
    gradient scaler and needs CUDA (check refuses it with `device cpu`; here the run landed on
    a CPU with `device auto`)."""
    if setting == "auto":
        setting = "bf16" if dev.type == "cuda" else "fp32"
    if setting == "fp16":
        if dev.type != "cuda":
            raise NncError.at(span, "precision fp16 needs a GPU, and this run is on the CPU",
                              help="use fp32 (the CPU's default) or bf16")
        return Precision(torch.float16, torch.amp.GradScaler("cuda"))
    return Precision({"fp32": None, "bf16": torch.bfloat16}[setting])


def wants_channels_last(setting, graph) -> bool:
    """auto: for models with layers that run faster channels-last (conv nets, ~1.1-1.2x in eager mode)."""
    if setting != "auto":
        return bool(setting)
    from nnc.compiler.layers import LAYERS

    return any(LAYERS[l.kind].channels_last for l in graph.layers())
