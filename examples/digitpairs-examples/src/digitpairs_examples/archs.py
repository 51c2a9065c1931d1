"""Two digit branches of one's own, registered as digitpairs architectures.

A branch is a function or class `size -> nn.Module` from images (N, 1, size, size) to 10 digit logits (N, 10);
digitpairs trains it as the Siamese network's digit branch, ten rounds at once (torch.func), with weight sharing,
the auxiliary digit loss and the comparison head of the report's Siamese WS,AUX.
"""

import torch.nn.functional as F
from torch import nn

from digitpairs import Arch, register_arch


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a skip connection: (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResidualBranch(nn.Module):
    """A small residual CNN (about 80k parameters at 28x28, 30k at 14x14): a convolution and a residual block at
    each of two scales, then two linear layers with dropout."""

    def __init__(self, size: int, width: int = 16, hidden: int = 64):
        super().__init__()
        k = 5 if size == 28 else 3  # as the report's branch: a wider first kernel on the larger images
        side = ((size - k + 1) // 2 - 2) // 2  # after conv k, pool, conv 3, pool: 5 at 28, 2 at 14
        self.features = nn.Sequential(
            nn.Conv2d(1, width, k, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            ResidualBlock(width),
            nn.Conv2d(width, 2 * width, 3, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            ResidualBlock(2 * width))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU(),
                                        nn.Dropout(0.3), nn.Linear(hidden, 10))

    def forward(self, x):  # (N, 1, S, S) -> (N, 10)
        return self.classifier(self.features(x))


def mlp_branch(size: int) -> nn.Module:
    """A multilayer perceptron on the pixels (about 235k parameters at 28x28, 84k at 14x14)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 256), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


@register_arch
def residual_ws_aux():
    return Arch("residual_ws_aux", "Residual WS,AUX", objective="comparison+digits", branch=ResidualBranch)


@register_arch
def mlp_ws_aux():
    return Arch("mlp_ws_aux", "MLP WS,AUX", objective="comparison+digits", branch=mlp_branch)
