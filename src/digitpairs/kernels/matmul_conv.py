"""A grouped convolution as one batched matmul over unfolded patches (the run option `matmul_conv`, --matmul-conv).

The members' convolutions are a grouped convolution (models.KConv2d). On a GPU, with PyTorch's deterministic
algorithms, cuDNN's backward of such a convolution (one to 32 input channels per group, 10 groups) took more than
half of a training step's GPU time (docs/benchmarks.md). Written as im2col + matmul it is three batched matmuls
(forward, the weights' gradient, the input's), deterministic in cuBLAS, and the fold of the input's gradient
(col2im, which sums each pixel's taps in a fixed order). The patches cost memory: N * K * cin * ks^2 * H'W' values
(about 100 MB in bf16 for the second convolution of 10 rounds at 28x28, and as much again for the copy the matmul
reads), fine on a GPU.
"""

import torch
import torch.nn.functional as F


def conv2d_unfold(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                  groups: int) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=padding, groups=groups), stride 1, square kernels: x (N, G*cin, H, W),
    weight (G*cout, cin, ks, ks) -> (N, G*cout, H', W'). Under autocast the patches are made in its dtype (as the
    convolution would cast its input), so the large unfolded tensor is never float32 there."""
    n, _, h, w = x.shape
    gc_out, cin, ks, _ = weight.shape
    cout, taps = gc_out // groups, cin * ks * ks
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    ho, wo = h + 2 * padding - ks + 1, w + 2 * padding - ks + 1
    cols = F.unfold(x, ks, padding=padding)  # (N, G*taps, H'W'): a group's taps are consecutive rows
    cols = cols.view(n, groups, taps, ho * wo).permute(1, 2, 0, 3).reshape(groups, taps, n * ho * wo)
    w_ = weight.reshape(groups, cout, taps)
    out = torch.bmm(w_, cols) if bias is None else torch.baddbmm(bias.view(groups, cout, 1), w_, cols)
    return out.view(groups, cout, n, ho, wo).permute(2, 0, 1, 3, 4).reshape(n, gc_out, ho, wo)
