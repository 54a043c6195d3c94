"""Preprocessing from the notes, fitted on the training split only.

Every step is affine, x -> (x - mean) / std, then optionally x -> x @ proj (PCA / whitening
of vector inputs), so it is stored as three arrays in the checkpoint and baked into the
ONNX graph as Sub / Div / MatMul. Statistics are computed in float64 with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from nnc.compiler.layers.base import Params

if TYPE_CHECKING:  # annotations only: numpy is imported where arrays are made
    import numpy as np


class NoParams(Params):
    pass


class PCA(Params):
    dims: int | None = Field(None, ge=1)  # keep the top `dims` components (None: all)


class Whiten(PCA):
    eps: float = Field(1e-5, gt=0)


@dataclass(frozen=True)
class PreprocessDef:
    kind: str
    params: type[Params]
    images: bool  # allowed on image inputs
    vectors: bool
    doc: str


PREPROCESS = {d.kind: d for d in (
    PreprocessDef("mean_image", NoParams, True, True, "subtract the mean training example (AlexNet)"),
    PreprocessDef("channel_mean", NoParams, True, False, "subtract the per-channel mean (VGGNet)"),
    PreprocessDef("normalize", NoParams, True, True,
                  "divide by the standard deviation (per channel for images, per feature for vectors)"),
    PreprocessDef("pca", PCA, False, True, "center, then project onto the top principal components"),
    PreprocessDef("whiten", Whiten, False, True, "PCA, then divide each component by sqrt(eigenvalue + eps)"),
)}


def output_dims(steps: list[tuple[str, Params]], dims: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the model sees after preprocessing (PCA may reduce a vector)."""
    for kind, p in steps:
        if kind in ("pca", "whiten") and p.dims:
            dims = (min(p.dims, dims[0]),)
    return dims


def fit(steps: list[tuple[str, Params]], x: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of the training inputs x (N, *dims): mean, std and an optional projection."""
    import numpy as np  # here: `nnc check` reads this module's registry and never needs numpy

    x = x.astype(np.float64)
    n = len(x)
    mean = np.zeros(x.shape[1:])
    std = np.ones(x.shape[1:])
    proj = None
    for kind, p in steps:
        xc = (x - mean) / std
        if kind == "mean_image":
            mean = mean + xc.mean(0) * std
        elif kind == "channel_mean":
            mean = mean + (xc.mean((0, 2, 3))[:, None, None] * std)
        elif kind == "normalize":
            s = xc.std((0, 2, 3))[:, None, None] if x.ndim == 4 else xc.std(0)
            std = std * np.where(s > 1e-8, s, 1.0)
        elif kind in ("pca", "whiten"):
            mean = mean + xc.mean(0) * std
            xc = (x - mean) / std
            cov = xc.T @ xc / max(n - 1, 1)
            eig, vec = np.linalg.eigh(cov)
            order = np.argsort(eig)[::-1][: p.dims or len(eig)]
            proj = vec[:, order]
            if kind == "whiten":
                proj = proj / np.sqrt(eig[order] + p.eps)
    out = {"mean": np.broadcast_to(mean, x.shape[1:]).astype(np.float32),
           "std": np.broadcast_to(std, x.shape[1:]).astype(np.float32)}
    if proj is not None:
        out["proj"] = proj.astype(np.float32)
    return out


def apply(stats: dict, x):
    """Works on numpy arrays and torch tensors alike (the arrays broadcast over the batch)."""
    y = (x - stats["mean"]) / stats["std"]
    if "proj" in stats:
        y = y @ stats["proj"]
    return y


