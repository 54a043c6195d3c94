"""The preprocessing words of the notes (mean_image, channel_mean, normalize, pca, whiten).

Every step is affine, x -> (x - mean) / std, then optionally x -> x @ proj (PCA / whitening
of vector inputs); runtime/preprocess.py fits the statistics on the training split.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from nnc.compiler.vocab.registry import NoParams, Params, Registry


class PCA(Params):
    dims: int | None = Field(None, ge=1)  # keep the top `dims` components (None: all)


class Whiten(PCA):
    eps: float = Field(1e-5, gt=0)


@dataclass(frozen=True)
class PreprocessDef:
    """One preprocessing word."""

    kind: str
    params: type[Params]
    images: bool  # allowed on image inputs
    vectors: bool
    doc: str


PREPROCESS = Registry("preprocess step", (
    PreprocessDef("mean_image", NoParams, True, True, "subtract the mean training example (AlexNet)"),
    PreprocessDef("channel_mean", NoParams, True, False, "subtract the per-channel mean (VGGNet)"),
    PreprocessDef("normalize", NoParams, True, True,
                  "divide by the standard deviation (per channel for images, per feature for vectors)"),
    PreprocessDef("pca", PCA, False, True, "center, then project onto the top principal components"),
    PreprocessDef("whiten", Whiten, False, True, "PCA, then divide each component by sqrt(eigenvalue + eps)"),
))


def output_dims(steps: list[tuple[str, Params]], dims: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the model sees after preprocessing (PCA may reduce a vector)."""
    for kind, p in steps:
        if kind in ("pca", "whiten") and p.dims:
            dims = (min(p.dims, dims[0]),)
    return dims
