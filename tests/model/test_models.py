import pytest
import torch

from digitpairs.model import create_model
from digitpairs.spec.config import Config
from digitpairs.spec.registry import ARCHS

CFG = Config()


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("size", [28, 14])
def test_output_contract(name, size):
    net = create_model(name, CFG.replace(size=size), k=3).seed([0, 1, 2], [0, 1, 2])
    cmp, digits = net(torch.randn(3, 5, 2, size, size))
    assert cmp.shape == (3, 5) and digits.shape == (3, 5, 2, 10)
    assert net.predict(cmp, digits).shape == (3, 5)
    net.eval()
    with torch.no_grad():
        cmp, digits = net(torch.randn(3, 1, 2, size, size))  # a batch of one works in eval mode
    assert torch.isfinite(cmp).all()


@pytest.mark.parametrize("name", [n for n, a in ARCHS.items() if a.report])
def test_param_count_within_10_percent_of_report(name):
    n = create_model(name, CFG).num_params()
    assert abs(n - ARCHS[name].report[2]) / ARCHS[name].report[2] < 0.10
    assert create_model(name, CFG, k=4).num_params() == n  # per member, whatever K


def test_weight_sharing_really_shares():
    ws, nows = create_model("siamese_ws", CFG), create_model("siamese_nows", CFG)
    assert len(ws.branches) == 1 and len(nows.branches) == 2
    branch = sum(p.numel() for p in ws.branches[0].parameters())
    head = sum(p.numel() for p in ws.head.parameters())
    assert ws.num_params() == branch + head and nows.num_params() == 2 * branch + head
    ws.seed([0], [0])
    x = torch.randn(1, 4, 2, 28, 28)
    _, d = ws(x)
    _, d_swapped = ws(x.flip(2))  # the same branch sees either image: swapping images swaps the digits
    assert torch.allclose(d[:, :, 0], d_swapped[:, :, 1], atol=1e-6)
    d[:, :, 0].sum().backward()  # the first image's digits reach the one shared branch
    assert ws.branches[0].conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(ARCHS))
def test_member_is_independent_of_k(name):
    """Member k of a batched net is the same network as a single net from the same seeds."""
    cfg = CFG.replace(size=14)
    single = create_model(name, cfg, 1).seed([7], [8])
    batched = create_model(name, cfg, 3).seed([5, 7, 9], [6, 8, 10])
    x = torch.randn(3, 6, 2, 14, 14)
    single.eval(), batched.eval()
    with torch.no_grad():
        c1, d1 = single(x[1:2])
        c3, d3 = batched(x)
    assert torch.allclose(c1[0], c3[1], atol=1e-5) and torch.allclose(d1[0], d3[1], atol=1e-5)


def test_transfer_compares_predicted_digits():
    net = create_model("transfer", CFG)
    digits = torch.full((1, 3, 2, 10), -5.0)
    for b, (a, c) in enumerate([(2, 5), (5, 2), (4, 4)]):
        digits[0, b, 0, a] = digits[0, b, 1, c] = 5.0
    assert net.predict(torch.full((1, 3), 0.5), digits.softmax(-1)).tolist() == [[True, False, True]]


def test_prob_head_decides_by_the_probability_of_a_le_b():
    """Where the argmax logic and P(a <= b) disagree, the "prob" head follows the probability."""
    import dataclasses

    from digitpairs.spec.registry import ARCHS

    logic = create_model("transfer", CFG)
    prob = create_model(dataclasses.replace(ARCHS["transfer"], head="prob"), CFG)
    probs = torch.zeros(1, 1, 2, 10)
    probs[0, 0, 0, 3], probs[0, 0, 0, 7], probs[0, 0, 0, 8] = 0.4, 0.35, 0.25  # a is 3 by argmax, but P(a <= 5) = .4
    probs[0, 0, 1, 5] = 1.0
    assert logic.predict(None, probs).tolist() == [[True]] and prob.predict(None, probs).tolist() == [[False]]
    assert torch.allclose(prob.p_le(probs), torch.tensor([[0.4]]))


def test_padding_and_members_change_features_and_parameter_counts():
    for size, side in ((28, 7), (14, 3)):
        net = create_model("siamese_ws_aux_bn", CFG.replace(size=size, pad=True))
        assert net.branches[0].fc1.weight.shape[1] == 32 * side * side
    one = create_model("ws_bn_aug_bayes", CFG).num_params()
    assert create_model("ws_bn_aug_bayes", CFG.replace(members=3)).num_params() == 3 * one  # a round's ensemble
    assert create_model("ws_bn_aug_bayes", CFG.replace(size=14)).branches[0].conv1.padding == 1  # pads at 14 only
    assert create_model("ws_bn_aug_bayes", CFG).branches[0].conv1.padding == 0


def test_flops_count_the_convolutions_before_their_pools():
    """Analytic FLOPs per pair (2 per multiply-add): conv 24x24x16x25 + conv 8x8x32x(16x25) + fc 512x112 + fc 112x10
    per image, the head 20x20 + 20x20 + 20x1; with padding at 14x14 the convolutions keep the side (14, then 7)."""
    per_image = 2 * (24 * 24 * 16 * 25 + 8 * 8 * 32 * 16 * 25 + 512 * 112 + 112 * 10)
    assert create_model("siamese_ws_aux", CFG).flops_per_pair() == 2 * per_image + 2 * (400 + 400 + 20)
    padded = 2 * (14 * 14 * 16 * 9 + 7 * 7 * 32 * 16 * 9 + 288 * 112 + 112 * 10)
    assert create_model("ws_bn_aug_bayes", CFG.replace(size=14)).flops_per_pair() == 2 * padded


@pytest.mark.parametrize("name", ["siamese_ws_aux_bn_drop", "siamese_nows", "ws_bn_aug_bayes"])
def test_compiled_kernels_compute_what_pytorch_computes(name, monkeypatch):
    """The branch's fused convolution + pooling and BatchNorm + ReLU (ops.py, bnrelu.py) against PyTorch's
    operators, the same network and seeds, in training mode: in fp32 the loss and every gradient agree to rounding;
    under bf16 autocast every gradient is as close to the fp32 one as PyTorch's own bf16 gradient is."""
    from digitpairs.kernels import batchnorm as bnrelu
    from digitpairs.kernels import pool as ops

    size = 28 if name != "ws_bn_aug_bayes" else 14  # and padded convolutions at 14x14
    x = torch.randn(3, 8, 2, size, size, generator=torch.Generator().manual_seed(0))
    kernels = ops._conv_mode, bnrelu._fusable

    def grads(fused: bool, precision: str):
        ops._conv_mode, bnrelu._fusable = kernels if fused else (lambda *a: None, lambda *a: False)
        net = create_model(name, CFG.replace(size=size), k=3).seed([1, 2, 3], [4, 5, 6])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            cmp, digits = net(x)
        loss = cmp.float().square().mean() + digits.float().square().mean()
        loss.backward()
        return [loss.detach()] + [p.grad for p in net.parameters()]

    monkeypatch.setattr(ops, "_conv_mode", ops._conv_mode)  # restored after the test
    monkeypatch.setattr(bnrelu, "_fusable", bnrelu._fusable)
    exact, fused32 = grads(False, "fp32"), grads(True, "fp32")
    fused16, torch16 = grads(True, "bf16"), grads(False, "bf16")
    for e, f32, f16, t16 in zip(exact, fused32, fused16, torch16):
        torch.testing.assert_close(f32, e, rtol=1e-4, atol=1e-5 * e.abs().max().item())
        err16, errt = (((g - e).abs().max() / e.abs().max()).item() for g in (f16, t16))
        assert err16 <= 1.25 * errt + 0.01
