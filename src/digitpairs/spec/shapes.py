"""The network's sizes from its Config alone, without building it: the kernel side, the largest activation, and
the forward FLOPs. The engine sizes its groups of rounds and the driver orders its units with these; a test checks
them against the modules (model.PairNet.flops_per_pair counts by hooks). No torch.
"""

from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config


def kernel_size(cfg: Config) -> int:
    return 5 if cfg.size == 28 else 3  # the receptive field follows the image size


def conv_sides(cfg: Config) -> tuple[int, int, int]:
    """(the first convolution's output side, the second's, the side after the second pooling): 24, 8, 4 at 28."""
    ks = kernel_size(cfg)
    shrink = 0 if cfg.pad else ks - 1  # what a convolution takes off the side ("same" padding: nothing)
    first = cfg.size - shrink
    second = first // 2 - shrink
    return first, second, second // 2


def first_map_bytes(cfg: Config) -> int:
    """Bytes of one member's largest activation in a training step, the first convolution's output (on the CPU the
    fused kernel of kernels/pool.py never writes it whole, so a cache budget based on it is generous there)."""
    side = conv_sides(cfg)[0]
    return cfg.batch_size * 2 * cfg.channels[0] * side * side * (2 if cfg.precision == "bf16" else 4)


def flops_per_pair(arch: Arch, cfg: Config) -> int:
    """Forward FLOPs of one member on one pair: 2 per multiply-add of the convolutions and linear layers (the two
    images through the branch, then the comparison head if it has one)."""
    ks, (c1, c2), h = kernel_size(cfg), cfg.channels, cfg.hidden
    first, second, last = conv_sides(cfg)
    per_image = c1 * first * first * ks * ks + c2 * second * second * c1 * ks * ks + c2 * last * last * h + h * 10
    head = 20 * cfg.head_hidden + cfg.head_hidden ** 2 + cfg.head_hidden if arch.head == "mlp" else 0
    return 2 * (2 * per_image + head)
