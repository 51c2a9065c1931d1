"""BatchNorm followed by ReLU on channels-last maps, in two passes forward and two backward (C kernels, kernels/csrc).

`batch_norm_relu(x, bn)` is `F.relu(bn(x))` for an nn.BatchNorm2d `bn`, with its semantics: in training the batch's
mean and biased variance normalise, and the running statistics move by the module's momentum with the unbiased
variance; in eval the running statistics normalise. The statistics are summed in float64 over blocks summed in
float32 (PyTorch sums in float32), so the values agree with PyTorch's to rounding. PyTorch's own BatchNorm backward
on these small channels-last maps makes several passes and is slow on the CPU; this one reads x and the gradient
twice. Anything the kernels do not take (CUDA tensors, NCHW, a channel count not a multiple of 16, a module without
affine weights or running statistics) goes to PyTorch.
"""

import torch
import torch.nn.functional as F
from torch import nn

from digitpairs.kernels.build import DTYPES, LANES, define, library

MAX_C = define("MAX_C")  # the C kernels' bound on channels (csrc/batchnorm.c)


def _fusable(x: torch.Tensor, bn: nn.Module) -> bool:
    return (isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.track_running_stats and x.device.type == "cpu"
            and x.dim() == 4 and x.dtype in DTYPES and x.shape[1] % LANES == 0 and x.shape[1] <= MAX_C
            and x.is_contiguous(memory_format=torch.channels_last) and x.shape[0] * x.shape[2] * x.shape[3] > 1
            and bn.weight.dtype == torch.float32 and library() is not None)


def _call(name: str, x: torch.Tensor, *tensors, rows: int, c: int):
    getattr(library(), f"{name}_{DTYPES[x.dtype]}")(x.data_ptr(), *(t.data_ptr() for t in tensors), rows, c)


def _apply(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """relu(x * a + b), a and b per channel (float32)."""
    y = torch.empty_like(x, memory_format=torch.channels_last)
    _call("bn_relu", x, a, b, y, rows=x.numel() // x.shape[1], c=x.shape[1])
    return y


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, a, b, mean, invstd):
        ctx.save_for_backward(x, a, b, mean, invstd)
        return _apply(x, a, b)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, a, b, mean, invstd = ctx.saved_tensors
        rows, c = x.numel() // x.shape[1], x.shape[1]
        g = g.to(x.dtype).contiguous(memory_format=torch.channels_last)
        s1, s2 = torch.empty(c), torch.empty(c)
        _call("bn_relu_sums", x, g, a, b, mean, s1, s2, rows=rows, c=c)
        # dx = a (gm - s1 / n - (x - mean) invstd^2 s2 / n), gm the gradient where the output was positive
        q = -a * invstd * invstd * s2 / rows
        r = -a * s1 / rows - q * mean
        dx = torch.empty_like(x, memory_format=torch.channels_last)
        _call("bn_relu_dx", x, g, a, b, q, r, dx, rows=rows, c=c)
        return dx, s2 * invstd, s1, None, None, None, None


def batch_norm_relu(x: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """F.relu(bn(x)) (module docstring); bn may be any module (nn.Identity: the ReLU alone)."""
    if not _fusable(x, bn):
        return F.relu(bn(x))
    rows, c = x.numel() // x.shape[1], x.shape[1]
    with torch.no_grad():
        if bn.training:
            mean, var = torch.empty(c), torch.empty(c)
            _call("bn_stats", x, mean, var, rows=rows, c=c)
            bn.num_batches_tracked.add_(1)
            f = 1 / bn.num_batches_tracked.item() if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - f).add_(mean, alpha=f)
            bn.running_var.mul_(1 - f).add_(var * (rows / (rows - 1)), alpha=f)
        else:
            mean, var = bn.running_mean, bn.running_var
        invstd = (var + bn.eps).rsqrt()
        a = bn.weight * invstd
        b = bn.bias - mean * a
    if torch.is_grad_enabled() and (x.requires_grad or bn.weight.requires_grad or bn.bias.requires_grad):
        if not bn.training:  # gradients through the running statistics: PyTorch's
            return F.relu(bn(x))
        return _BatchNormReLU.apply(x, bn.weight, bn.bias, a, b, mean, invstd)
    return _apply(x, a, b)
