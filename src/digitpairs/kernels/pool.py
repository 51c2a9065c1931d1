"""Fast CPU kernels for what PyTorch does slowly in this network: 2x2 max-pooling and the first convolution (here),
BatchNorm + ReLU (batchnorm.py); their C source is in csrc/.

`max_pool2x2(x)` is `F.max_pool2d(x, 2)` with the same values and the same gradient. On CPU, for float32 and
bfloat16 in NCHW or channels_last, a C kernel makes one pass over the input and keeps a compact argmax (uint8,
0..3, at pooled resolution); the backward writes every element of the input's gradient in one pass (no separate
zero-fill, which made F.max_pool2d's backward slow).

`conv_pool2x2(x, weight, bias, padding, groups)` is `max_pool2x2(F.conv2d(x, weight, bias, padding=padding,
groups=groups))`. Where each group has one input channel (the branch's first convolution: one image per member)
and a multiple of 16 output channels, one C kernel computes the convolution and pools it without writing the
full-resolution map, and its backward computes the weights' gradient from the pooled gradient and the argmax.
Its sums are in float32 in a fixed order (oneDNN sums in another, so the values agree to rounding); under bf16
autocast the image, weights and bias are rounded to bfloat16 first and the output is bfloat16, as autocast's
convolution does (on CPUs with AVX512-BF16 the exact bfloat16 products are added in pairs, vdpbf16ps, so such a
CPU's sums differ from another's in order). The image gets no gradient (it is data); one that needs a gradient
takes the unfused path.

Tie rule, F.max_pool2d's on CPU: the window is scanned in the order (0,0), (0,1), (1,0), (1,1); an element
replaces the running maximum if it is greater, or NaN. So among equal maxima the first in scan order takes the
gradient, and a window with a NaN gives NaN (its last NaN takes the gradient). Odd sides are floored as F.max_pool2d
does: the last row or column is never a maximum and gets zero gradient. One exception, in conv_pool2x2 under bf16
autocast: it compares a window's four sums in float32 and rounds the maximum to bfloat16 afterwards, where autocast's
convolution rounds each output first and the pooling then compares the rounded values. The pooled values are the
same; where two sums differ in float32 but round to the same bfloat16, the gradient may go to another element of the
window (seen in 3 of 2304 windows of a random first layer). It is deterministic, and training is unaffected beyond
rounding (docs/benchmarks.md: the paired check of old and new engines).

Anything else (CUDA tensors, other dtypes or layouts, a machine without a C compiler) goes to F.max_pool2d and
F.conv2d: the choice depends on the device, dtypes and shapes only, never on timing or thread counts, so the same
command gives the same numbers. The kernels (kernels/csrc) are compiled once per machine with the system's C compiler
(kernels/build.py).
"""

import torch
import torch.nn.functional as F
from torch.autograd.profiler import record_function

from digitpairs.kernels.build import DTYPES, LANES, MAX_KERNEL, library


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


# ---- 2x2 max-pooling ----

def _layout(x: torch.Tensor) -> str | None:
    """"nchw" or "nhwc" when x's memory is one of those layouts without gaps; None otherwise."""
    if x.is_contiguous():
        return "nchw"
    if x.is_contiguous(memory_format=torch.channels_last):
        return "nhwc"
    return None


def _poolable(x: torch.Tensor) -> bool:
    """Whether the C kernels take x (else F.max_pool2d)."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in DTYPES and x.shape[-1] >= 2 and x.shape[-2] >= 2
            and x.numel() > 0 and _layout(x) is not None and library() is not None)


def _dims(x: torch.Tensor, layout: str) -> list[int]:
    n, c, h, w = x.shape
    return [n, h, w, c] if layout == "nhwc" else [n * c, h, w]


def _format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "nhwc" else torch.contiguous_format


def _pool(x: torch.Tensor, with_index: bool):
    """(N, C, H, W) -> (N, C, H//2, W//2) in x's layout, and the uint8 argmax (or None)."""
    layout = _layout(x)
    n, c, h, w = x.shape
    out = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=_format(layout))
    idx = torch.empty(out.shape, dtype=torch.uint8, memory_format=_format(layout)) if with_index else None
    getattr(library(), f"pool_{layout}_{DTYPES[x.dtype]}")(x.data_ptr(), out.data_ptr(), _ptr(idx), *_dims(x, layout))
    return out, idx


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out, idx = _pool(x, with_index=True)
        ctx.save_for_backward(idx)
        ctx.in_shape, ctx.layout = x.shape, _layout(x)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        g = g.contiguous(memory_format=_format(ctx.layout))
        gx = torch.empty(ctx.in_shape, dtype=g.dtype, memory_format=_format(ctx.layout))  # every element written
        getattr(library(), f"unpool_{ctx.layout}_{DTYPES[g.dtype]}")(g.data_ptr(), idx.data_ptr(), gx.data_ptr(),
                                                                      *_dims(gx, ctx.layout))
        return gx


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2): the same values and the same gradient (module docstring), at memory speed on CPU."""
    if not _poolable(x):
        return F.max_pool2d(x, 2)
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPool2x2.apply(x)
    with record_function("ops::max_pool2x2"):  # a ctypes call is no torch op: named for the profiler
        return _pool(x, with_index=False)[0]


# ---- a convolution from one channel per group, fused with the pooling ----

def _conv_mode(x: torch.Tensor, weight: torch.Tensor, groups: int, padding: int) -> str | None:
    """"f32" or "bf16" (autocast) when the fused kernel takes this convolution; None otherwise."""
    kc, cin, ks, ks2 = weight.shape
    if (x.device.type != "cpu" or x.dim() != 4 or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.requires_grad or cin != 1 or x.shape[1] != groups or (kc // groups) % LANES or ks != ks2
            or ks > MAX_KERNEL or min(x.shape[-2:]) + 2 * padding - ks + 1 < 2 or x.shape[-1] != x.shape[-2]
            or library() is None):
        return None
    if not torch.is_autocast_enabled("cpu"):
        return "f32"
    return "bf16" if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None


def _conv_inputs(x, weight, bias, padding: int, mode: str):
    """The kernel's operands: the padded image (N, K, S, S) in the mode's dtype, the taps (K, ks, ks, C) and the
    bias (K, C) in float32, holding bfloat16 values in bf16 mode."""
    k = x.shape[1]
    ks = weight.shape[-1]
    rnd = (lambda t: t.to(torch.bfloat16).float()) if mode == "bf16" else (lambda t: t)
    xs = (F.pad(x, [padding] * 4) if padding else x).to(torch.bfloat16 if mode == "bf16" else x.dtype).contiguous()
    taps = rnd(weight.detach()).reshape(k, -1, ks, ks).permute(0, 2, 3, 1).contiguous()
    b = None if bias is None else rnd(bias.detach()).reshape(k, -1).contiguous()
    return xs, taps, b


def _conv_pool(xs, taps, b, mode: str, with_index: bool):
    n, k, s, _ = xs.shape
    ks, c = taps.shape[1], taps.shape[3]
    side = (s - ks + 1) // 2
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    out = torch.empty((n, k * c, side, side), dtype=dtype, memory_format=torch.channels_last)
    idx = torch.empty(out.shape, dtype=torch.uint8, memory_format=torch.channels_last) if with_index else None
    getattr(library(), f"conv_pool_{mode}")(xs.data_ptr(), taps.data_ptr(), _ptr(b), out.data_ptr(), _ptr(idx),
                                            n, k, s, ks, c)
    return out, idx


class _ConvPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding: int, mode: str):
        xs, taps, b = _conv_inputs(x, weight, bias, padding, mode)
        out, idx = _conv_pool(xs, taps, b, mode, with_index=True)
        ctx.save_for_backward(xs, idx)
        ctx.mode, ctx.weight_shape, ctx.bias = mode, weight.shape, bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        xs, idx = ctx.saved_tensors
        n, k, s, _ = xs.shape
        kc, _, ks, _ = ctx.weight_shape
        g = g.to(torch.bfloat16 if ctx.mode == "bf16" else torch.float32).contiguous(memory_format=torch.channels_last)
        gw = torch.empty(k, ks * ks, kc // k)  # (K, taps, C): every element written
        gb = torch.empty(k, kc // k) if ctx.bias else None
        getattr(library(), f"conv_pool_grad_{ctx.mode}")(xs.data_ptr(), g.data_ptr(), idx.data_ptr(), gw.data_ptr(),
                                                          _ptr(gb), n, k, s, ks, kc // k)
        gw = gw.transpose(1, 2).reshape(ctx.weight_shape)
        return None, gw, None if gb is None else gb.reshape(-1), None, None


def conv_pool2x2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, groups: int,
                 channels_last: bool = True) -> torch.Tensor:
    """max_pool2x2(F.conv2d(x, weight, bias, padding=padding, groups=groups)), fused where the kernel applies
    (module docstring). channels_last: the memory format of an unfused convolution (speed only)."""
    mode = _conv_mode(x, weight, groups, padding)
    if mode is None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return max_pool2x2(F.conv2d(x, weight, bias, padding=padding, groups=groups))
    if torch.is_grad_enabled() and (weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _ConvPool2x2.apply(x, weight, bias, padding, mode)
    with record_function("ops::conv_pool2x2"):
        return _conv_pool(*_conv_inputs(x, weight, bias, padding, mode), mode, with_index=False)[0]
