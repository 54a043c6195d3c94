"""Preprocessing statistics, fitted on the training split only (the words: compiler/vocab/preprocess.py).

Every step is affine, x -> (x - mean) / std, then optionally x -> x @ proj (PCA / whitening
of vector inputs), so it is stored as three arrays in the checkpoint and baked into the
ONNX graph as Sub / Div / MatMul.

The statistics come from one pass over the data: per-position sums of x and x^2 in float64
(`Moments`), which is all that the mean and standard deviation steps need in any order, so data
streamed from disk batch by batch (and summed over several processes) gets the statistics the
whole array in memory would. PCA and whitening also need the covariance: it is computed from a
sample, the first PCA_SAMPLE examples of the (already shuffled) training split, which is all of
it for data held in memory.
"""

from __future__ import annotations

import numpy as np

from nnc.compiler.vocab.registry import Params

PCA_SAMPLE = 10_000  # examples of a streamed training split that PCA / whitening are fitted on


def steps_of(spec) -> list[tuple[str, Params]]:
    """The spec's preprocessing steps; none for token inputs (ids are not affine values)."""
    return [(c.kind, c.params) for c in spec.data.preprocess] if spec.model.input.kind != "tokens" else []


def fit_for(spec, x: np.ndarray) -> dict[str, np.ndarray]:
    """The spec's preprocessing statistics, fitted on x (the training split's raw inputs); none
    for a spec without preprocessing or with token inputs."""
    steps = steps_of(spec)
    return fit(steps, x) if steps else {}


def fit(steps: list[tuple[str, Params]], x: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of the training inputs x (N, *dims): mean, std and an optional projection."""
    m = Moments(x.shape[1:])
    m.add(x)
    return fit_moments(steps, m, x)


class Moments:
    """Per-position sum and sum of squares (float64) of the examples added, batch by batch."""

    def __init__(self, dims: tuple[int, ...]):
        self.n = 0
        self.s1 = np.zeros(dims)
        self.s2 = np.zeros(dims)

    def add(self, x) -> None:
        x = np.asarray(x, np.float64)
        self.n += len(x)
        self.s1 += x.sum(0)
        self.s2 += np.einsum("i...,i...->...", x, x)


def fit_moments(steps: list[tuple[str, Params]], m: Moments, sample: np.ndarray | None) -> dict[str, np.ndarray]:
    """The steps' statistics, applied in order, from the moments; `sample` (raw examples) for PCA."""
    dims = m.s1.shape
    image = len(dims) == 3
    m1, m2 = m.s1 / max(m.n, 1), m.s2 / max(m.n, 1)
    mean, std, proj = np.zeros(dims), np.ones(dims), None
    for kind, p in steps:
        e1 = (m1 - mean) / std  # E[xc] and E[xc^2] per position, xc = (x - mean) / std
        e2 = (m2 - 2 * mean * m1 + mean * mean) / (std * std)
        if kind == "mean_image":
            mean = m1.copy()
        elif kind == "channel_mean":
            mean = mean + e1.mean((1, 2))[:, None, None] * std
        elif kind == "normalize":
            var = e2.mean((1, 2)) - e1.mean((1, 2)) ** 2 if image else e2 - e1 * e1
            s = np.sqrt(np.maximum(var, 0.0))
            s = s[:, None, None] if image else s
            std = std * np.where(s > 1e-8, s, 1.0)
        elif kind in ("pca", "whiten"):
            mean = m1.copy()
            xc = (np.asarray(sample, np.float64) - mean) / std
            cov = xc.T @ xc / max(len(xc) - 1, 1)
            eig, vec = np.linalg.eigh(cov)
            order = np.argsort(eig)[::-1][: p.dims or len(eig)]
            proj = vec[:, order]
            if kind == "whiten":
                proj = proj / np.sqrt(eig[order] + p.eps)
    out = {"mean": np.broadcast_to(mean, dims).astype(np.float32), "std": np.broadcast_to(std, dims).astype(np.float32)}
    if proj is not None:
        out["proj"] = proj.astype(np.float32)
    return out


def needs_sample(steps) -> bool:
    return any(kind in ("pca", "whiten") for kind, _ in steps)


def apply(stats: dict, x):
    """Works on numpy arrays and torch tensors alike (the arrays broadcast over the batch)."""
    y = (x - stats["mean"]) / stats["std"]
    if "proj" in stats:
        y = y @ stats["proj"]
    return y
