import torch

from conftest import fake_mnist
from digitpairs.pairs import round_data, swap, target_of


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
