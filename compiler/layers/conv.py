"""Convolution and pooling over images (C, H, W).

Shape: H_out = floor((H + 2*pad - dilation*(k - 1) - 1) / stride) + 1, likewise W (PyTorch's
rule); `nnc check` warns with the arithmetic when the quotient is not an integer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from .base import (
    Inferred,
    LayerDef,
    NoParams,
    Pair,
    PairNonNeg,
    Params,
    Positive,
    Shape,
    ShapeError,
    Tensor,
    Watch,
    conv_out,
    fit_warning,
)


def _need_image(x: Shape, what: str) -> None:
    if x.kind != "image":
        raise ShapeError(f"{what} needs an image input (C, H, W), got {x}",
                         help="conv and pooling layers work on images; declare `input image(C, H, W)`")


def _window(x: Shape, k, s, p, d, what: str, ceil: bool = False) -> tuple[tuple[int, int], list]:
    c, h, w = x.dims
    kh, kw = k
    out, warns = [], []
    for axis, size, kk, ss, pp, dd in (("height", h, kh, s[0], p[0], d[0]), ("width", w, kw, s[1], p[1], d[1])):
        keff = dd * (kk - 1) + 1
        if keff > size + 2 * pp:
            raise ShapeError(f"a {kh}x{kw} {what} does not fit the {h}x{w} input" +
                             (f" padded by {pp}" if pp else ""), "kernel",
                             help=f"the input here is {x}; use a smaller kernel or more padding")
        if ceil:  # PyTorch's ceil_mode: rounded up, but the last window must start inside the input or left pad
            n = -(-(size + 2 * pp - keff) // ss) + 1
            out.append(n - 1 if (n - 1) * ss >= size + pp else n)
            continue
        out.append(conv_out(size, kk, ss, pp, dd)[0])
        msg = fit_warning(axis, size, kk, ss, pp, dd)
        if msg:
            warns.append(("stride", msg))
    if len(warns) == 2 and warns[0][1].replace("height", "width") == warns[1][1]:
        warns = [("stride", warns[0][1].replace("along height", "along height and width"))]
    return (out[0], out[1]), warns


def _size(t) -> str:
    return f"{t[0]}x{t[1]}"


# ---------------------------------------------------------------- conv


class Conv(Params):
    filters: Positive
    kernel: Pair
    stride: Pair = (1, 1)
    pad: PairNonNeg = (0, 0)
    dilation: Pair = (1, 1)
    groups: Positive = 1
    bias: bool = True

    @model_validator(mode="after")
    def _groups(self):
        if self.filters % self.groups:
            raise ValueError(f"filters ({self.filters}) must be divisible by groups ({self.groups})")
        return self


def conv_infer(p: Conv, x: Shape) -> Inferred:
    _need_image(x, "conv")
    c = x.dims[0]
    if c % p.groups:
        raise ShapeError(f"the input's {c} channels are not divisible by groups={p.groups}", "groups")
    (ho, wo), warns = _window(x, p.kernel, p.stride, p.pad, p.dilation, "kernel")
    kh, kw = p.kernel
    per_out = (c // p.groups) * kh * kw
    tensors = [Tensor("weight", (p.filters, c // p.groups, kh, kw), "weight", per_out, p.filters * kh * kw // p.groups)]
    if p.bias:
        tensors.append(Tensor("bias", (p.filters,), "bias", per_out, p.filters))
    flops = 2 * per_out * p.filters * ho * wo
    return Inferred(Shape("image", (p.filters, ho, wo)), tuple(tensors), flops, tuple(warns))


def conv_torch(p: Conv, x: Shape):
    from torch import nn

    return nn.Conv2d(x.dims[0], p.filters, p.kernel, p.stride, p.pad, p.dilation, p.groups, p.bias)


def conv_label(name: str, p: Conv) -> str:
    extra = "".join(f", {k} {v[0] if v[0] == v[1] else _size(v)}" for k, v in (("dilation", p.dilation),) if v != (1, 1))
    extra += f", groups {p.groups}" if p.groups > 1 else ""
    s, pad = p.stride, p.pad
    stride = s[0] if s[0] == s[1] else _size(s)
    pad_s = pad[0] if pad[0] == pad[1] else _size(pad)
    return f"{name.upper()}: {p.filters} {_size(p.kernel)} filters at stride {stride}, pad {pad_s}{extra}"


def conv_onnx(e, info, x: str) -> str:
    p: Conv = info.params
    ins = [x, e.param(info, "weight")] + ([e.param(info, "bias")] if p.bias else [])
    return e.op("Conv", ins, info.path, kernel_shape=list(p.kernel), strides=list(p.stride),
                pads=[p.pad[0], p.pad[1], p.pad[0], p.pad[1]], dilations=list(p.dilation), group=p.groups)


def conv_source(p: Conv, x: Shape) -> str:
    extra = "".join(f", {k}={v}" for k, v, d in (("dilation", p.dilation, (1, 1)), ("groups", p.groups, 1),
                                                  ("bias", p.bias, True)) if v != d)
    return (f"nn.Conv2d({x.dims[0]}, {p.filters}, kernel_size={p.kernel}, stride={p.stride}, "
            f"padding={p.pad}{extra})")


CONV = LayerDef("conv", Conv, conv_infer, conv_torch,
                "2-D convolution: (C, H, W) -> (filters, H_out, W_out)",
                positional=("filters",), prefix="conv", label=conv_label, watch=Watch(), channels_last=True, filters=True,
                onnx=conv_onnx, python=conv_source)


# ---------------------------------------------------------------- transposed convolution


class ConvTranspose(Params):
    filters: Positive
    kernel: Pair
    stride: Pair = (1, 1)
    pad: PairNonNeg = (0, 0)
    output_pad: PairNonNeg = (0, 0)  # added to one side of the output: picks among the sizes a stride allows
    dilation: Pair = (1, 1)
    groups: Positive = 1
    bias: bool = True

    @model_validator(mode="after")
    def _checks(self):
        if self.filters % self.groups:
            raise ValueError(f"filters ({self.filters}) must be divisible by groups ({self.groups})")
        for a in (0, 1):
            if self.output_pad[a] >= max(self.stride[a], self.dilation[a]):
                raise ValueError(f"output_pad must be smaller than the stride or the dilation, got {_size(self.output_pad)}")
        return self


def conv_transpose_infer(p: ConvTranspose, x: Shape) -> Inferred:
    _need_image(x, "conv_transpose")
    c, h, w = x.dims
    if c % p.groups:
        raise ShapeError(f"the input's {c} channels are not divisible by groups={p.groups}", "groups")
    out = []
    for size, k, s, pad, op, d in zip((h, w), p.kernel, p.stride, p.pad, p.output_pad, p.dilation):
        out.append((size - 1) * s - 2 * pad + d * (k - 1) + op + 1)
    if min(out) < 1:
        raise ShapeError(f"pad {_size(p.pad)} leaves no output of the {h}x{w} input", "pad")
    kh, kw = p.kernel
    fan_in = (c // p.groups) * -(-kh // p.stride[0]) * -(-kw // p.stride[1])  # inputs reaching one output
    fan_out = p.filters // p.groups * kh * kw  # outputs one input reaches
    tensors = [Tensor("weight", (c, p.filters // p.groups, kh, kw), "weight", fan_in, fan_out)]
    if p.bias:
        tensors.append(Tensor("bias", (p.filters,), "bias", fan_in, fan_out))
    flops = 2 * (c // p.groups) * p.filters * kh * kw * h * w  # each input pixel scattered into a window
    return Inferred(Shape("image", (p.filters, out[0], out[1])), tuple(tensors), flops)


def conv_transpose_torch(p: ConvTranspose, x: Shape):
    from torch import nn

    return nn.ConvTranspose2d(x.dims[0], p.filters, p.kernel, p.stride, p.pad, p.output_pad, p.groups, p.bias,
                              p.dilation)


def conv_transpose_onnx(e, info, x: str) -> str:
    p: ConvTranspose = info.params
    ins = [x, e.param(info, "weight")] + ([e.param(info, "bias")] if p.bias else [])
    return e.op("ConvTranspose", ins, info.path, kernel_shape=list(p.kernel), strides=list(p.stride),
                pads=[p.pad[0], p.pad[1], p.pad[0], p.pad[1]], output_padding=list(p.output_pad),
                dilations=list(p.dilation), group=p.groups)


def conv_transpose_source(p: ConvTranspose, x: Shape) -> str:
    extra = "".join(f", {k}={v}" for k, v, d in (("output_padding", p.output_pad, (0, 0)), ("groups", p.groups, 1),
                                                  ("bias", p.bias, True), ("dilation", p.dilation, (1, 1))) if v != d)
    return f"nn.ConvTranspose2d({x.dims[0]}, {p.filters}, kernel_size={p.kernel}, stride={p.stride}, padding={p.pad}{extra})"


CONV_TRANSPOSE = LayerDef("conv_transpose", ConvTranspose, conv_transpose_infer, conv_transpose_torch,
                          "transposed convolution: (C, H, W) -> (filters, (H - 1)*stride - 2*pad + dilation*(k - 1) "
                          "+ output_pad + 1, likewise W)", positional=("filters",), prefix="deconv",
                          label=lambda name, p: f"{name.upper()}: {p.filters} {_size(p.kernel)} transposed filters at "
                                                f"stride {p.stride[0] if p.stride[0] == p.stride[1] else _size(p.stride)}",
                          watch=Watch(), channels_last=True, onnx=conv_transpose_onnx, python=conv_transpose_source)


# ---------------------------------------------------------------- upsampling


class Upsample(Params):
    scale: Pair = (2, 2)
    mode: Literal["nearest", "bilinear"] = "nearest"


def upsample_infer(p: Upsample, x: Shape) -> Inferred:
    _need_image(x, "upsample")
    c, h, w = x.dims
    out = Shape("image", (c, h * p.scale[0], w * p.scale[1]))
    return Inferred(out, (), 0 if p.mode == "nearest" else 4 * out.numel)  # bilinear: 2 lerps of 2 ops per value


def upsample_torch(p: Upsample, x: Shape):
    from torch import nn

    return nn.Upsample(scale_factor=tuple(float(s) for s in p.scale), mode=p.mode,
                       align_corners=False if p.mode == "bilinear" else None)


def upsample_onnx(e, info, x: str) -> str:
    import numpy as np

    p: Upsample = info.params
    scales = e.const(np.array([1, 1, *p.scale], np.float32), f"{info.path}.scales")
    how = ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
           if p.mode == "nearest" else {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"})
    return e.op("Resize", [x, "", scales], info.path, **how)


def upsample_source(p: Upsample, x: Shape) -> str:
    scale = tuple(float(s) for s in p.scale)
    return f"nn.Upsample(scale_factor={scale}, mode={p.mode!r}" + (", align_corners=False)" if p.mode == "bilinear" else ")")


UPSAMPLE = LayerDef("upsample", Upsample, upsample_infer, upsample_torch,
                    "upsampling by whole factors: (C, H, W) -> (C, H*scale, W*scale), nearest or bilinear",
                    positional=("scale",), prefix="up",
                    label=lambda name, p: f"{name.upper()}: {_size(p.scale)} {p.mode} upsampling",
                    onnx=upsample_onnx, python=upsample_source)


# ---------------------------------------------------------------- pooling


class Pool(Params):
    kernel: Pair
    stride: Pair | None = None  # default: the kernel (non-overlapping), as in PyTorch
    pad: PairNonNeg = (0, 0)
    ceil: bool = False  # round the output size up (PyTorch's ceil_mode; GoogLeNet's pools)

    @model_validator(mode="after")
    def _pad(self):
        if self.pad[0] * 2 > self.kernel[0] or self.pad[1] * 2 > self.kernel[1]:
            raise ValueError(f"pad must be at most half the kernel, got pad={self.pad[0]} for kernel {_size(self.kernel)}")
        return self

    @property
    def strides(self) -> tuple[int, int]:
        return self.stride or self.kernel


def _pool_infer(p: Pool, x: Shape, what: str) -> Inferred:
    _need_image(x, what)
    c = x.dims[0]
    (ho, wo), warns = _window(x, p.kernel, p.strides, p.pad, (1, 1), "window", p.ceil)
    return Inferred(Shape("image", (c, ho, wo)), (), c * ho * wo * p.kernel[0] * p.kernel[1], tuple(warns))


def _pool_label(word: str):
    def label(name: str, p: Pool) -> str:
        s = p.strides
        stride = s[0] if s[0] == s[1] else _size(s)
        pad = f", pad {p.pad[0]}" if p.pad != (0, 0) else ""
        pad += ", rounded up" if p.ceil else ""
        title = name.upper() if name.lower().startswith(word.lower()) else f"{word} {name.upper()}"
        return f"{title}: {_size(p.kernel)} filters at stride {stride}{pad}"
    return label


def maxpool_torch(p: Pool, x: Shape):
    from torch import nn

    return nn.MaxPool2d(p.kernel, p.strides, p.pad, ceil_mode=p.ceil)


def avgpool_torch(p: Pool, x: Shape):
    from torch import nn

    return nn.AvgPool2d(p.kernel, p.strides, p.pad, ceil_mode=p.ceil, count_include_pad=True)


def _pool_onnx(op: str, **extra):
    def emit(e, info, x: str) -> str:
        p: Pool = info.params
        return e.op(op, [x], info.path, kernel_shape=list(p.kernel), strides=list(p.strides),
                    pads=[p.pad[0], p.pad[1], p.pad[0], p.pad[1]], ceil_mode=int(p.ceil), **extra)
    return emit


def _pool_source(cls: str, extra: str = ""):
    return lambda p, x: (f"nn.{cls}(kernel_size={p.kernel}, stride={p.strides}, padding={p.pad}"
                         f"{', ceil_mode=True' if p.ceil else ''}{extra})")


MAXPOOL = LayerDef("maxpool", Pool, lambda p, x: _pool_infer(p, x, "maxpool"), maxpool_torch,
                   "max pooling: (C, H, W) -> (C, H_out, W_out); stride defaults to the kernel",
                   positional=("kernel",), prefix="pool", label=_pool_label("MAX"),
                   onnx=_pool_onnx("MaxPool"), python=_pool_source("MaxPool2d"))
AVGPOOL = LayerDef("avgpool", Pool, lambda p, x: _pool_infer(p, x, "avgpool"), avgpool_torch,
                   "average pooling (padding counted as zeros): (C, H, W) -> (C, H_out, W_out)",
                   positional=("kernel",), prefix="pool", label=_pool_label("AVG"),
                   onnx=_pool_onnx("AveragePool", count_include_pad=1),
                   python=_pool_source("AvgPool2d", ", count_include_pad=True"))



def gap_infer(p: NoParams, x: Shape) -> Inferred:
    _need_image(x, "global_avgpool")
    return Inferred(Shape("vector", (x.dims[0],)), (), x.numel)


def gap_torch(p: NoParams, x: Shape):
    from torch import nn

    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def gap_onnx(e, info, x: str) -> str:
    return e.op("Flatten", [e.op("GlobalAveragePool", [x], f"{info.path}.pool")], info.path, axis=1)


GLOBAL_AVGPOOL = LayerDef("global_avgpool", NoParams, gap_infer, gap_torch,
                          "global average pooling: (C, H, W) -> (C)", prefix="gap", onnx=gap_onnx,
                          python=lambda p, x: "nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())",
                          label=lambda name, p: f"{name.upper()}: global average pool")

LAYERS = (CONV, CONV_TRANSPOSE, UPSAMPLE, MAXPOOL, AVGPOOL, GLOBAL_AVGPOOL)
