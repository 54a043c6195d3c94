"""Preprocessing statistics, fitted on the training split only (the words: compiler/vocab/preprocess.py).

Every step is affine, x -> (x - mean) / std, then optionally x -> x @ proj (PCA / whitening
of vector inputs), so it is stored as three arrays in the checkpoint and baked into the
ONNX graph as Sub / Div / MatMul. Statistics are computed in float64 with numpy.
"""

from __future__ import annotations

import numpy as np

from nnc.compiler.vocab.registry import Params


def fit_for(spec, x: np.ndarray) -> dict[str, np.ndarray]:
    """The spec's preprocessing statistics, fitted on x (the training split's raw inputs); none
    for a spec without preprocessing or with token inputs."""
    steps = [(c.kind, c.params) for c in spec.data.preprocess]
    return fit(steps, x) if steps and spec.model.input.kind != "tokens" else {}


def fit(steps: list[tuple[str, Params]], x: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of the training inputs x (N, *dims): mean, std and an optional projection."""
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


