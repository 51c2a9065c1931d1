import torch

from digitpairs.data.pairs import round_data, swap, target_of
from tests.support import fake_mnist


def test_target_is_first_le_second_and_ties_stay_one_under_swap():
    classes = torch.tensor([[1, 2], [2, 1], [3, 3], [0, 9]])
    assert target_of(classes).tolist() == [1, 0, 1, 1]
    x = torch.arange(4 * 2 * 2 * 2, dtype=torch.float).view(4, 2, 2, 2)
    x2, c2 = swap(x, classes)
    assert target_of(c2).tolist() == [1, 0, 1, 1, 0, 1, 1, 0]  # equal digits keep target 1 after the swap
    assert torch.equal(x2[4:, 0], x[:, 1]) and torch.equal(c2[4:], classes.flip(1))


def test_round_data_shapes_sizes_and_determinism():
    m = fake_mnist()
    a = round_data(m, seed=3, n_pairs=50, n_test=40)
    b = round_data(m, seed=3, n_pairs=50, n_test=40)
    c = round_data(m, seed=4, n_pairs=50, n_test=40)
    assert a.train_x.shape == (100, 2, 28, 28) and a.test_x.shape == (40, 2, 28, 28)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_classes, b.test_classes)
    assert not torch.equal(a.train_x, c.train_x)
    small = round_data(m, seed=3, n_pairs=50, n_test=40, size=14)
    assert small.train_x.shape == (100, 2, 14, 14)
    assert torch.equal(small.train_classes, a.train_classes)  # same pairs, pooled
    # digit classes follow the images: the swapped half is the first half with the images exchanged
    assert torch.equal(a.train_x[50:], a.train_x[:50].flip(1))
    assert torch.equal(a.train_target[:50], target_of(a.train_classes[:50]))


def test_normalisation_uses_training_statistics_only():
    m = fake_mnist()
    d = round_data(m, seed=0, n_pairs=50, n_test=40, do_swap=False)
    assert abs(d.train_x.mean().item()) < 1e-5 and abs(d.train_x.std().item() - 1) < 1e-5
    m2 = dict(m, test_images=(m["test_images"] // 2))  # a different test set leaves the statistics alone
    d2 = round_data(m2, seed=0, n_pairs=50, n_test=40, do_swap=False)
    assert (d.mean, d.std) == (d2.mean, d2.std)
    assert abs(d2.test_x.mean().item()) > 0.1  # the test set is not re-centred on itself


def test_augmentation_keeps_shapes_is_per_member_and_off_by_default():
    from digitpairs.data.pairs import augment, view
    from digitpairs.spec.config import Config

    x = torch.randn(3, 4, 2, 14, 14)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    assert augment(x, Config(), gens) is x  # every lever off: the images themselves
    cfg = Config(shift=0.1, rotate=10.0, scale=0.1, elastic=0.03)
    out = augment(x, cfg, gens)
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.allclose(out, x)
    alone = augment(x[1:2], cfg, [torch.Generator().manual_seed(2)])  # member 1 with its own generator only
    assert torch.allclose(alone[0], out[1], atol=1e-6)
    # an image moved by a whole pixel: the affine map with no rotation or scaling is a plain shift
    img = torch.zeros(1, 1, 2, 14, 14)
    img[..., 5:9, 5:9] = 1.0
    moved = augment(img, Config(shift=0.25), [torch.Generator().manual_seed(0)])
    assert abs(moved.sum() - img.sum()) < 1e-3  # the blob moves, nothing is lost at this size
    assert torch.equal(view(img, 0), img) and torch.equal(view(img, 1)[..., 6:10, 5:9], img[..., 5:9, 5:9])


def test_augmentation_grid_is_affine_grid_plus_the_elastic_field():
    """The separable grid equals F.affine_grid of the drawn map plus the bicubic upsampling of the drawn field."""
    import torch.nn.functional as F

    from digitpairs.data.pairs import _bicubic, augment
    from digitpairs.spec.config import Config

    x = torch.randn(1, 3, 2, 28, 28)
    cfg = Config(shift=0.1, rotate=10.0, scale=0.1, elastic=0.03)
    out = augment(x, cfg, [torch.Generator().manual_seed(4)])
    g = torch.Generator().manual_seed(4)  # the same draws, in augment's order
    u = torch.rand(6, 4, generator=g) * 2 - 1
    angle, zoom = u[:, 0] * cfg.rotate * torch.pi / 180, 1 + u[:, 1] * cfg.scale
    cos, sin, shift = torch.cos(angle) / zoom, torch.sin(angle) / zoom, u[:, 2:] * 2 * cfg.shift
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    up = _bicubic(28, torch.device("cpu"))
    field = up @ torch.randn(6, 2, 4, 4, generator=g) @ up.T
    grid = F.affine_grid(theta, [6, 1, 28, 28], align_corners=False) + field.permute(0, 2, 3, 1) * 2 * cfg.elastic
    expected = F.grid_sample(x.view(6, 1, 28, 28), grid, padding_mode="border", align_corners=False)
    torch.testing.assert_close(out, expected.view(x.shape), rtol=1e-4, atol=1e-4)
