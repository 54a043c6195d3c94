"""Training-time augmentation of image batches; never applied at evaluation or export."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from nnc.compiler.vocab.registry import NoParams, Params, Registry


class Crop(Params):
    pad: int = Field(4, ge=1)


@dataclass(frozen=True)
class AugmentDef:
    kind: str
    params: type[Params]
    doc: str


AUGMENT = Registry("augment step", (
    AugmentDef("flip", NoParams, "mirror each image left-right with probability 1/2"),
    AugmentDef("crop", Crop, "zero-pad by `pad` and take a random crop of the original size"),
))


def augment_batch(x, steps, generator):
    """x: (B, C, H, W) tensor on any device; one random draw per example."""
    import torch

    for kind, p in steps:
        if kind == "flip":
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        elif kind == "crop":
            dy = torch.randint(0, 2 * p.pad + 1, (x.shape[0],), device=x.device, generator=generator)
            dx = torch.randint(0, 2 * p.pad + 1, (x.shape[0],), device=x.device, generator=generator)
            x = _crop(torch.nn.functional.pad(x, (p.pad,) * 4), dy, dx, x.shape[2], x.shape[3])
    return x


def _crop(padded, dy, dx, h, w):
    import torch

    b, c = padded.shape[:2]
    rows = dy[:, None] + torch.arange(h, device=padded.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=padded.device)  # (B, W)
    idx_r = rows[:, None, :, None].expand(b, c, h, padded.shape[3])
    out = padded.gather(2, idx_r)
    idx_c = cols[:, None, None, :].expand(b, c, h, w)
    return out.gather(3, idx_c)
