"""unfold.conv2d_unfold is F.conv2d (grouped, padded or not), forward and both gradients; training with it follows
training without it, to rounding."""

import pytest
import torch
import torch.nn.functional as F

from digitpairs.data.pairs import round_data
from digitpairs.engine.training import train
from digitpairs.kernels.matmul_conv import conv2d_unfold
from digitpairs.spec.config import Config
from tests.support import fake_mnist


@pytest.mark.parametrize("groups,cin,cout,ks,padding,bias", [(3, 1, 16, 5, 0, True), (3, 4, 8, 5, 0, False),
                                                           (2, 4, 8, 3, 1, True), (1, 2, 3, 3, 0, True)])
def test_it_is_a_grouped_convolution(groups, cin, cout, ks, padding, bias):
    torch.manual_seed(0)
    x = torch.randn(5, groups * cin, 12, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(groups * cout, cin, ks, ks, dtype=torch.float64, requires_grad=True)
    b = torch.randn(groups * cout, dtype=torch.float64, requires_grad=True) if bias else None
    ref = F.conv2d(x, w, b, padding=padding, groups=groups)
    out = conv2d_unfold(x, w, b, padding, groups)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(ref, [x, w] + ([b] if bias else []), g)
    for mine, theirs in zip(torch.autograd.grad(out, [x, w] + ([b] if bias else []), g), grads):
        torch.testing.assert_close(mine, theirs)


def test_under_bf16_autocast_it_is_autocasts_convolution():
    torch.manual_seed(1)
    x, w, b = torch.randn(4, 6, 14, 14), torch.randn(6 * 4, 2, 3, 3), torch.randn(24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = F.conv2d(x, w, b, groups=3), conv2d_unfold(x, w, b, 0, 3)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("name", ["siamese_ws_aux_bn", "siamese_nows", "ws_bn_aug_bayes"])  # bias, two, padded
def test_training_with_it_follows_training_without(name):
    import dataclasses

    from digitpairs.spec.registry import ARCHS

    arch = dataclasses.replace(ARCHS[name], extra=ARCHS[name].extra | {"epochs": 2})
    cfg = Config(size=14, n_pairs=100, n_test=60, epochs=2, batch_size=20, precision="fp32", device="cpu")
    m, seeds = fake_mnist(), [3, 4]
    ds = [round_data(m, s, cfg.n_pairs, cfg.n_test, cfg.size) for s in seeds]
    plain = train(arch, cfg, ds, [0, 1], seeds, groups=[2])
    matmul = train(arch, cfg.replace(matmul_conv=True), ds, [0, 1], seeds, groups=[2])
    for a, b in zip(plain, matmul):
        for ca, cb in zip(a.curves, b.curves):
            assert ca["train_loss"] == pytest.approx(cb["train_loss"], rel=1e-4)
            assert abs(ca["test_acc"] - cb["test_acc"]) <= 2 / cfg.n_test + 1e-9
