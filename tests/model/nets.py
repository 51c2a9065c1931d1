"""Networks of a user's kind for the tests, importable as tests.model.nets (their references resolve by import)."""

import torch
from torch import nn


def conv_bn_drop(size):
    """A conv branch with BatchNorm and dropout (no bias before BatchNorm: its gradient is float noise, which Adam
    turns into steps of size lr, so it would differ between any two ways of summing)."""
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * (size // 2) ** 2, 24), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(24, 10))


class ConvView(nn.Module):
    """A convolution, then .view of its map, as many tutorials write it: only NCHW's strides allow that view."""

    def __init__(self, size):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * size * size, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.shape[0], -1) if self.view(self.training) else y.flatten(1))

    @staticmethod
    def view(training: bool) -> bool:  # whether this forward takes the .view
        return True


class ConvViewInEval(ConvView):
    """The .view in evaluation only."""

    @staticmethod
    def view(training: bool) -> bool:
        return not training


class _FlatInBackward(torch.autograd.Function):
    """flatten(1), whose backward reads its input with .view, as code that takes NCHW's strides for granted."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return y.flatten(1)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        y.view(y.shape[0], -1)  # fails on a channels-last map
        return g.view(y.shape)


class ConvViewInBackward(ConvView):
    """A .view that needs NCHW's strides in its backward only."""

    def forward(self, x):
        return self.fc(_FlatInBackward.apply(torch.relu(self.conv(x))))


class ConvNoisy(ConvView):
    """Noise of its own on its feature map: torch's generator fills the map in memory order."""

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(nn.functional.dropout(y, 0.1, self.training).flatten(1))


def mlp(size):
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 32), nn.ReLU(), nn.Linear(32, 10))


def head(size=None):
    return nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))


class Branchy(nn.Module):
    """Data-dependent control flow: vmap cannot take it."""

    def __init__(self, size):
        super().__init__()
        self.fc = nn.Linear(size * size, 10)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y if y.abs().sum().item() >= 0 else -y


class Noisy(nn.Module):
    """A random operation of its own (functional dropout): batched with torch's generator."""

    def __init__(self, size):
        super().__init__()
        self.fc = nn.Linear(size * size, 10)

    def forward(self, x):
        return self.fc(nn.functional.dropout(x.flatten(1), 0.1, self.training))


def not_a_module(size):
    return "a network"


def failing(size):
    raise ValueError("no such layer")


def wrong_shape(size):
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 7))


def noise(x):
    return x + torch.randn_like(x)


def lazy(size):
    """Lazy layers: their shapes come from the first forward."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(10))


class TrainsBatchedEvaluatesPlain(nn.Module):
    """Only its evaluation reads a value back to the host."""

    def __init__(self, size):
        super().__init__()
        self.fc = nn.Linear(size * size, 10)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        if not self.training and y.abs().sum().item() < 0:
            return -y
        return y


class Deterministic(nn.Module):
    """vmap cannot take it, and it draws nothing."""

    def __init__(self, size):
        super().__init__()
        self.fc = nn.Linear(size * size, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * (1.0 if x.sum().item() >= -1 else 2.0)


class StochasticDepth(nn.Module):
    """Skips its layer at random in training: equal outputs for many seeds, but it draws."""

    def __init__(self, size):
        super().__init__()
        self.fc = nn.Linear(size * size, 10)

    def forward(self, x):
        h = x.flatten(1)
        if self.training and torch.rand(()) < 0.01:
            return self.fc(h * 0)
        return self.fc(h)


class NoisyEvaluation(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.fc = nn.Linear(size * size, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) + 0.01 * torch.randn(x.shape[0], 10)
