"""Training-time augmentation of image batches; never applied at evaluation or export.

Each step reads its randomness from a row of uniform draws per example (`draws` of them), so the
same draws give the same images wherever they run: on the device for data held in memory, in
the worker processes for streamed data (runtime/stream.py), and on any number of training
processes (each takes its rows of the global batch's draws). Augmentation works on raw pixel
values, before preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from nnc.compiler.vocab.registry import NoParams, Params, Registry


class Crop(Params):
    pad: int = Field(4, ge=1)


class ResizedCrop(Params):
    scale: tuple[float, float] = (0.08, 1.0)  # the region's share of the image's area
    ratio: tuple[float, float] = (0.75, 4 / 3)  # its aspect ratio, width / height

    @field_validator("scale", "ratio")
    @classmethod
    def _range(cls, v, info):
        lo, hi = v
        top = 1.0 if info.field_name == "scale" else float("inf")
        if not 0 < lo <= hi <= top:
            raise ValueError(f"{info.field_name} is a range (low, high) with 0 < low <= high"
                             + (" <= 1" if top == 1.0 else "") + f", got ({lo:g}, {hi:g})")
        return v


class Jitter(Params):
    brightness: float = Field(0.4, ge=0, le=1)  # each factor is drawn from [1 - v, 1 + v]
    contrast: float = Field(0.4, ge=0, le=1)
    saturation: float = Field(0.4, ge=0, le=1)


@dataclass(frozen=True)
class AugmentDef:
    """One augmentation word."""

    kind: str
    params: type[Params]
    doc: str
    draws: int  # uniform numbers per example


AUGMENT = Registry("augment step", (
    AugmentDef("flip", NoParams, "mirror each image left-right with probability 1/2", 1),
    AugmentDef("crop", Crop, "zero-pad by `pad` and take a random crop of the original size", 2),
    AugmentDef("random_resized_crop", ResizedCrop,
               "a random region (`scale` of the area, aspect ratio in `ratio`) resized to the input; comes first", 4),
    AugmentDef("color_jitter", Jitter, "scale brightness, contrast and saturation by random factors, in that order", 3),
))


def draws(steps) -> int:
    return sum(AUGMENT[kind].draws for kind, _ in steps)


def augment_batch(x, steps, u, pixel_max: float | None = None, skip_first_crop: bool = False):
    """x: (B, C, H, W) float tensor of raw values on any device; u: (B, draws(steps)) uniform
    draws in [0, 1) on the same device. `pixel_max`: the top of the pixel range, where colour
    changes are clipped (None: not clipped). `skip_first_crop`: a leading random_resized_crop
    was applied already, at decoding (streamed images are cropped from the full-size file)."""
    import torch

    col = 0
    for i, (kind, p) in enumerate(steps):
        v = u[:, col:col + AUGMENT[kind].draws]
        col += AUGMENT[kind].draws
        if kind == "flip":
            x = torch.where((v[:, 0] < 0.5)[:, None, None, None], x.flip(3), x)
        elif kind == "crop":
            dy, dx = (v * (2 * p.pad + 1)).long().clamp_(max=2 * p.pad).unbind(1)
            x = _crop(torch.nn.functional.pad(x, (p.pad,) * 4), dy, dx, x.shape[2], x.shape[3])
        elif kind == "random_resized_crop" and not (i == 0 and skip_first_crop):
            h, w = x.shape[2], x.shape[3]
            boxes = resized_crop_boxes(v, torch.full_like(v[:, 0], w), torch.full_like(v[:, 0], h), p)
            x = _resample(x, boxes)
        elif kind == "color_jitter":
            x = _jitter(x, v, p, pixel_max)
    return x


def resized_crop_boxes(v, w, h, p: ResizedCrop):
    """Per example (x0, y0, x1, y1) of a region of an image w x h (tensors (B,)), from four uniform
    draws each: area share in `scale`, log aspect ratio uniform in `ratio`, position. A region
    that would not fit is clipped to the image."""
    import math

    import torch

    area = w * h * (p.scale[0] + v[:, 0] * (p.scale[1] - p.scale[0]))
    ratio = torch.exp(math.log(p.ratio[0]) + v[:, 1] * (math.log(p.ratio[1]) - math.log(p.ratio[0])))
    bw = torch.minimum(torch.sqrt(area * ratio), w)
    bh = torch.minimum(torch.sqrt(area / ratio), h)
    x0, y0 = v[:, 2] * (w - bw), v[:, 3] * (h - bh)
    return torch.stack([x0, y0, x0 + bw, y0 + bh], 1)


def _resample(x, boxes):
    """Each example's box resized (bilinear) to the full H x W."""
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = (boxes[:, 2] - boxes[:, 0]) / w
    theta[:, 0, 2] = (boxes[:, 0] + boxes[:, 2]) / w - 1
    theta[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / h
    theta[:, 1, 2] = (boxes[:, 1] + boxes[:, 3]) / h - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(x, v, p: Jitter, top: float | None):
    """torchvision's ColorJitter without hue, in a fixed order: x * b; (x - mean grey) * c + mean
    grey; (x - grey) * s + grey, each clipped to [0, top] when the pixel range is known."""
    f = 1 + (2 * v - 1) * x.new_tensor([p.brightness, p.contrast, p.saturation])
    clip = (lambda t: t.clamp(0, top)) if top else (lambda t: t)

    def grey(t):
        return t if t.shape[1] != 3 else (0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3])

    x = clip(x * f[:, 0, None, None, None])
    m = grey(x).mean((1, 2, 3), keepdim=True)
    x = clip((x - m) * f[:, 1, None, None, None] + m)
    if x.shape[1] == 3:
        g = grey(x)
        x = clip((x - g) * f[:, 2, None, None, None] + g)
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
