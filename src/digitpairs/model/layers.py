"""The layers of K independent members (rounds, or an ensemble's members) computed at once: every layer keeps a
separate set of weights per member. Convolutions are grouped convolutions with one group per member, linear layers
batched matmuls, BatchNorm keeps statistics per member and channel, dropout draws each member's masks from that
member's own generator.
"""

import torch
import torch.nn.functional as F
from torch import nn

from digitpairs.device import upload
from digitpairs.kernels import conv2d_unfold, conv_pool2x2, max_pool2x2


class KConv2d(nn.Module):
    """K independent convolutions as one grouped convolution, each followed by a 2x2 max-pool if `pool`:
    (N, K*cin, H, W) -> (N, K*cout, H', W'), H' halved (floored) by the pool. On the CPU, a convolution from one
    channel per member runs fused with its pool (kernels/pool.py: the same function, summed in another order); with `unfold`
    set (the run option matmul_conv), it is one batched matmul over unfolded patches (kernels/matmul_conv.py)."""

    def __init__(self, k: int, cin: int, cout: int, ks: int, bias: bool = True, padding: int = 0,
                 pool: bool = False):
        super().__init__()
        self.k, self.fan_in, self.padding, self.pool = k, cin * ks * ks, padding, pool
        self.weight = nn.Parameter(torch.empty(k * cout, cin, ks, ks))
        self.bias = nn.Parameter(torch.empty(k * cout)) if bias else None
        self.unfold = False

    def forward(self, x, channels_last: bool = True):
        """channels_last: the memory format of PyTorch's convolution (speed only; on CPU much faster)."""
        if self.unfold:
            y = conv2d_unfold(x, self.weight, self.bias, self.padding, self.k)
            return max_pool2x2(y) if self.pool else y
        if self.pool:
            return conv_pool2x2(x, self.weight, self.bias, self.padding, self.k, channels_last)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, self.weight, self.bias, padding=self.padding, groups=self.k)


class KLinear(nn.Module):
    """K independent linear layers as one batched matmul: (K, N, fin) -> (K, N, fout)."""

    def __init__(self, k: int, fin: int, fout: int, bias: bool = True):
        super().__init__()
        self.k, self.fan_in = k, fin
        self.weight = nn.Parameter(torch.empty(k, fin, fout))
        self.bias = nn.Parameter(torch.empty(k, 1, fout)) if bias else None

    def forward(self, x):
        return torch.bmm(x, self.weight) if self.bias is None else torch.baddbmm(self.bias, x, self.weight)


class KBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over (K, N, F) with statistics per member and feature: the K*F features are just more features."""

    def __init__(self, k: int, features: int):
        super().__init__(k * features)

    def forward(self, x):
        k, n, f = x.shape
        return super().forward(x.transpose(0, 1).reshape(n, k * f)).view(n, k, f).transpose(0, 1)


class KDropout(nn.Module):
    """Dropout over (K, N, F) whose masks come from each member's own generator (PairNet.rngs): drawn here, or
    beforehand (draw()) and set as `mask` for the next forward (the training step does, steps.py)."""

    def __init__(self, p: float, rngs: list, features: int):
        super().__init__()
        self.p, self.rngs, self.features = p, rngs, features
        self.mask: torch.Tensor | None = None  # (K, N, F) 0/1 keep mask on the input's device, or None: draw it

    def draw(self, rows: int) -> torch.Tensor:
        """(K, rows, F) keep mask, on the CPU from the members' streams: the same masks on every device."""
        return torch.stack([torch.empty(rows, self.features).bernoulli_(1 - self.p, generator=g) for g in self.rngs])

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = self.mask if self.mask is not None else upload(self.draw(x.shape[1]), x.device)
        return x * keep.to(x.dtype) / (1 - self.p)
