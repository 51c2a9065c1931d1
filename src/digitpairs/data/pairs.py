"""Pair sets: seeded draws of image pairs, the target (first digit <= second), normalisation, swap augmentation."""

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from digitpairs.device import upload


def sub_seed(seed: int, tag: int) -> int:
    """An independent stream per (round seed, purpose): 0 pairs, 1 initialisation, 2 data order and dropout."""
    return int(np.random.SeedSequence([seed, tag]).generate_state(1)[0])


def target_of(classes: torch.Tensor) -> torch.Tensor:
    """(N, 2) digit classes -> (N,) float target, 1 where the first digit <= the second (ties give 1)."""
    return (classes[:, 0] <= classes[:, 1]).float()


def draw_pairs(images: np.ndarray, labels: np.ndarray, n: int, generator: torch.Generator):
    """n pairs of distinct images: (n, 2, 28, 28) float in [0, 255], (n, 2) long classes, and (n, 2) the images'
    indices in the split."""
    if 2 * n > len(images):
        raise ValueError(f"{n} pairs need {2 * n} images; the split has {len(images)}")
    idx = torch.randperm(len(images), generator=generator)[: 2 * n].view(n, 2).numpy()
    return torch.from_numpy(images[idx]).float(), torch.from_numpy(labels[idx].astype(np.int64)), idx


def swap(x: torch.Tensor, classes: torch.Tensor):
    """Append every pair with its images swapped; the target follows from the swapped classes."""
    return torch.cat([x, x.flip(1)]), torch.cat([classes, classes.flip(1)])


@dataclass
class PairData:
    """One round's data, ready for training: images normalised with the training pairs' statistics."""
    train_x: torch.Tensor  # (N, 2, S, S) float
    train_classes: torch.Tensor  # (N, 2) long
    test_x: torch.Tensor  # (M, 2, S, S) float
    test_classes: torch.Tensor  # (M, 2) long
    val_x: torch.Tensor  # (V, 2, S, S) float: held out from the training pairs, not swapped
    val_classes: torch.Tensor  # (V, 2) long
    mean: float
    std: float
    test_idx: np.ndarray | None = None  # (M, 2) the test images' indices in MNIST test

    @property
    def train_target(self) -> torch.Tensor:
        return target_of(self.train_classes)

    @property
    def test_target(self) -> torch.Tensor:
        return target_of(self.test_classes)


def round_data(mnist: dict, seed: int, n_pairs: int, n_test: int, size: int = 28, do_swap: bool = True,
               n_val: int = 0) -> PairData:
    """The pairs of the round with this seed: the same for every architecture that trains on it.

    The last n_val of the n_pairs training pairs are held out for validation (the rest train)."""
    g = torch.Generator().manual_seed(sub_seed(seed, 0))
    train_x, train_c, _ = draw_pairs(mnist["train_images"], mnist["train_labels"], n_pairs, g)
    test_x, test_c, test_idx = draw_pairs(mnist["test_images"], mnist["test_labels"], n_test, g)
    if size == 14:  # the course's 14x14 images: 2x2 average pooling
        train_x, test_x = F.avg_pool2d(train_x, 2), F.avg_pool2d(test_x, 2)
    k = n_pairs - n_val
    train_x, val_x, train_c, val_c = train_x[:k], train_x[k:], train_c[:k], train_c[k:]
    mean, std = train_x.mean().item(), train_x.std().item()  # statistics of the pairs that train, only
    train_x, val_x, test_x = (train_x - mean) / std, (val_x - mean) / std, (test_x - mean) / std
    if do_swap:
        train_x, train_c = swap(train_x, train_c)
    return PairData(train_x, train_c, test_x, test_c, val_x, val_c, mean, std, test_idx)


def round_for(mnist: dict, cfg, r: int) -> PairData:
    """Round r of a study run with this Config: its seed is cfg.seed + r."""
    return round_data(mnist, cfg.seed + r, cfg.n_pairs, cfg.n_test, cfg.size, cfg.swap, cfg.n_val)


def augmenting(cfg) -> bool:
    return bool(cfg.shift or cfg.rotate or cfg.scale or cfg.elastic)


def augment_draws(cfg, generators: list[torch.Generator], n: int) -> dict[str, torch.Tensor]:
    """One step's augmentation draws for n images per member, on the CPU from member k's generators[k], in the order
    augment() uses them: "u" (K, n, 4) uniform in [0, 1), then, with elastic distortions, "coarse" (K, n, 2, 4, 4)
    standard normal. Empty without augmentation."""
    if not augmenting(cfg):
        return {}
    out = {"u": torch.stack([torch.rand(n, 4, generator=g) for g in generators])}
    if cfg.elastic:
        out["coarse"] = torch.stack([torch.randn(n, 2, 4, 4, generator=g) for g in generators])
    return out


def augment(x: torch.Tensor, cfg, generators: list[torch.Generator] | None = None,
            draws: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Random small affine maps and elastic distortions that keep a digit's identity, drawn per image.

    x (K, B, 2, S, S), normalised; member k's draws come from generators[k], so a member's augmentation does not
    depend on which members train beside it (or, already made, from draws: augment_draws()'s, on x's device). The
    border value (the background) fills what moves in."""
    if not augmenting(cfg):
        return x
    k, b, _, s, _ = x.shape
    n = b * 2
    if draws is None:
        draws = {key: upload(t, x.device) for key, t in augment_draws(cfg, generators, n).items()}
    u = draws["u"].reshape(k * n, 4) * 2 - 1
    angle = u[:, 0] * cfg.rotate * torch.pi / 180
    zoom = 1 + u[:, 1] * cfg.scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift = u[:, 2:] * 2 * cfg.shift  # grid coordinates span 2 across the image
    # the sampling grid, F.affine_grid's plus the elastic field, as one separable product: coordinate c of pixel
    # (i, j) is sum_ab basis[i, a] m[c, a, b] basis[j, b] over the basis (1, coordinate, 4 bicubic columns)
    m = torch.zeros(k * n, 2, 6, 6, device=x.device)  # (K*n, 2, 6, 6)
    m[:, 0, 0, 0], m[:, 0, 0, 1], m[:, 0, 1, 0] = shift[:, 0], cos, -sin  # x' = cos x - sin y + shift_x
    m[:, 1, 0, 0], m[:, 1, 0, 1], m[:, 1, 1, 0] = shift[:, 1], sin, cos  # y' = sin x + cos y + shift_y
    if cfg.elastic:  # a displacement drawn on a 4x4 grid, upsampled bicubically
        m[:, :, 2:, 2:] = draws["coarse"].reshape(k * n, 2, 4, 4) * (2 * cfg.elastic)
    basis = _basis(s, x.device)  # (S, 6)
    grid = (basis @ m @ basis.T).permute(0, 2, 3, 1)  # (K*n, S, S, 2)
    out = F.grid_sample(x.reshape(k * n, 1, s, s).float(), grid, padding_mode="border", align_corners=False)
    return out.view(x.shape).to(x.dtype)


@functools.cache
def _bicubic(s: int, device: torch.device) -> torch.Tensor:
    """(S, 4): bicubic upsampling of 4 values to S, as a matrix (column i is the upsampled unit vector i), computed
    on the CPU and kept on the device."""
    units = torch.eye(4).view(4, 1, 4, 1).expand(4, 1, 4, 4)  # image i is 1 on row i: constant along the width
    return F.interpolate(units, size=(s, s), mode="bicubic", align_corners=False)[:, 0, :, 0].T.contiguous().to(device)


@functools.cache
def _basis(s: int, device: torch.device) -> torch.Tensor:
    """(S, 6): per pixel row (or column) 1, its coordinate in [-1, 1] (F.affine_grid's, align_corners=False) and
    the 4 bicubic upsampling weights (_bicubic)."""
    coord = (torch.arange(s) * 2 + 1) / s - 1
    return torch.cat([torch.ones(s, 1), coord[:, None], _bicubic(s, torch.device("cpu"))], 1).to(device)


VIEWS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]  # test-time shifts (pixels)


def view(x: torch.Tensor, i: int) -> torch.Tensor:
    """Test-time view i of images (..., S, S): view 0 is the image; the others shift it by one pixel (MNIST's digits
    sit in a centred box with an empty margin, so what wraps around is background)."""
    return x if i == 0 else x.roll(VIEWS[i], dims=(-2, -1))
