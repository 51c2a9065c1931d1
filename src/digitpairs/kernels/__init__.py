"""Fast CPU operators of the project's own, in C (csrc/), with PyTorch's operators wherever they do not apply:
2x2 max-pooling, the first convolution fused with its pooling, BatchNorm + ReLU; and the convolutions as batched
matmuls (the run option matmul_conv). They know no model."""

from digitpairs.kernels.batchnorm import batch_norm_relu
from digitpairs.kernels.build import library
from digitpairs.kernels.matmul_conv import conv2d_unfold
from digitpairs.kernels.pool import conv_pool2x2, max_pool2x2

__all__ = ["batch_norm_relu", "conv2d_unfold", "conv_pool2x2", "library", "max_pool2x2"]
