"""Where a command computes: CUDA when present (or asked for), the CPU otherwise."""

from __future__ import annotations

import torch

from nnc.diagnostics import NncError


def pick_device(choice: str, asked_by: str = "--device") -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise NncError(f"{asked_by} cuda: no CUDA device is available (use auto or cpu)")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")
