"""What the engine swaps into a module of yours so that K members train as separate runs would, and fast: each
nn.Dropout becomes a MaskedDropout, whose keep mask the engine draws from the member's own stream, and each 2x2
nn.MaxPool2d the engine's CPU kernel (the same values and gradient: kernels/pool.py). On a GPU each BatchNorm
computes in float32 under vmap, whose BatchNorm backward takes no bfloat16 input beside float32 statistics. Parameter
and buffer names stay as in your module."""

import threading

import torch
import torch.nn.functional as F
from torch import nn

from digitpairs.kernels import max_pool2x2


class MaskedDropout(nn.Module):
    """nn.Dropout whose keep mask is given (a buffer that functional_call replaces per member)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.register_buffer("mask", torch.ones(()), persistent=False)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * self.mask.to(x.dtype) / (1 - self.p)


VMAP = threading.local()  # VMAP.on: this thread is inside Members.batched's vmap


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2): the same values and gradient, by the engine's CPU kernel (kernels/pool.py) outside vmap
    (which hands it no tensor with memory of its own)."""

    def forward(self, x):
        return F.max_pool2d(x, 2) if getattr(VMAP, "on", False) else max_pool2x2(x)


def float_under_vmap(module: nn.Module, inputs: tuple):
    """A forward pre-hook of a BatchNorm: on a GPU, its bfloat16 or float16 input in float32 under vmap (autocast
    casts the output back where the next layer computes in bfloat16); anything else as it comes."""
    if not getattr(VMAP, "on", False) or not inputs or not isinstance(inputs[0], torch.Tensor):
        return None
    x = inputs[0]
    return (x.float(), *inputs[1:]) if x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) else None


def halving(m: nn.Module) -> bool:
    """Whether m is an nn.MaxPool2d that pools 2x2 windows with stride 2, nothing else."""
    return (type(m) is nn.MaxPool2d and m.kernel_size in (2, (2, 2)) and m.stride in (2, (2, 2))
            and m.padding in (0, (0, 0)) and m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices)


def mask_dropouts(module: nn.Module, keep: set[str] | None = None) -> nn.Module:
    """The module with each nn.Dropout (all, or those named in `keep`) replaced by a MaskedDropout, each 2x2
    max-pooling by the engine's kernel (the same function: kernels/pool.py), and each BatchNorm in float32 under
    vmap on a GPU."""
    for path, m in list(module.named_modules()):
        parent, _, name = path.rpartition(".")
        if type(m) is nn.Dropout and (keep is None or path in keep):
            setattr(module.get_submodule(parent), name, MaskedDropout(m.p))
        elif path and halving(m):
            setattr(module.get_submodule(parent), name, MaxPool2x2())
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(float_under_vmap)
    return module
