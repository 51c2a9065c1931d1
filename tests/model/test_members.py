"""Networks of your own (model/members.py): batched with torch.func where it can, the same numbers as separate runs,
a plain loop where it cannot, and one line for a factory that is wrong."""

import dataclasses

import pytest
import torch

from digitpairs import Arch, UserError
from digitpairs.data.pairs import round_data
from digitpairs.engine.training import group_rounds, train
from digitpairs.model import create_model, members, own_path
from digitpairs.model.weights import from_bytes
from digitpairs.spec.config import Config
from tests.model import nets
from tests.support import fake_mnist

CFG = Config(size=14, n_pairs=100, n_test=60, epochs=2, batch_size=20, precision="fp32", device="cpu")
CONV = Arch("t_conv", "conv", objective="comparison+digits", branch=nets.conv_bn_drop)
MLP = Arch("t_mlp", "mlp", share=False, objective="comparison+digits", branch=nets.mlp)
HEAD = Arch("t_head", "head", objective="comparison+digits", branch=nets.mlp, head=nets.head)


def datas(seeds):
    m = fake_mnist()
    return [round_data(m, s, CFG.n_pairs, CFG.n_test, CFG.size) for s in seeds]


@pytest.fixture
def plain(monkeypatch):
    """Every network of yours through the plain loop, one member after another."""
    real = members.probe

    def forced(*args):
        return dataclasses.replace(real(*args), mode="plain")

    monkeypatch.setattr(members, "probe", forced)


@pytest.mark.parametrize("arch", [CONV, MLP, HEAD], ids=lambda a: a.name)
def test_batched_rounds_equal_separate_plain_runs(arch, monkeypatch):
    """K rounds as one vmapped model follow the same math as K separate runs of the plain module (own data, init,
    order, BatchNorm statistics, dropout masks), to rounding, for a few steps."""
    seeds = [3, 4, 5]
    ds = datas(seeds)
    assert own_path(arch, CFG)[0] == "batched"
    together = train(arch, CFG, ds, [0, 1, 2], seeds, groups=[3])
    real = members.probe
    monkeypatch.setattr(members, "probe", lambda *a: dataclasses.replace(real(*a), mode="plain"))
    assert own_path(arch, CFG)[0] == "plain"
    for i, s in enumerate(seeds):
        (alone,) = train(arch, CFG, [ds[i]], [i], [s])
        for ca, ct in zip(alone.curves, together[i].curves):
            assert abs(ca["train_loss"] - ct["train_loss"]) < 1e-4
            assert abs(ca["test_acc"] - ct["test_acc"]) <= 1 / CFG.n_test + 1e-9
        wa, wt = from_bytes(alone.weights), from_bytes(together[i].weights)
        assert wa.keys() == wt.keys()
        for key in wa:  # BatchNorm's running statistics among them: per member
            assert torch.allclose(wa[key].float(), wt[key].float(), atol=1e-4), key


def test_batchnorm_statistics_stay_per_member():
    """Under vmap each member updates its own slice of the stacked running statistics."""
    net = create_model(CONV, CFG, 2).seed([1, 2], [3, 4]).train()
    x = torch.stack([torch.zeros(4, 2, 14, 14), torch.ones(4, 2, 14, 14)])
    net(x)
    (branch,) = net.own_parts()
    mean = branch.weights()["1.running_mean"]
    assert mean.shape == (2, 6) and not torch.allclose(mean[0], mean[1])
    assert branch.weights()["1.num_batches_tracked"].tolist() == [1, 1]


def test_a_module_vmap_cannot_take_trains_one_round_at_a_time():
    arch = Arch("t_branchy", "branchy", objective="digits", head="prob", branch=nets.Branchy)
    mode, why, _ = own_path(arch, CFG)
    assert mode == "plain" and ".item()" in why
    assert group_rounds(arch, CFG, "cpu") == 1
    first = train(arch, CFG, datas([3, 4]), [0, 1], [3, 4])
    again = train(arch, CFG, datas([3, 4]), [0, 1], [3, 4], threads=2)
    assert [r.curves for r in first] == [r.curves for r in again]


def test_a_module_with_its_own_randomness_is_batched_and_repeatable():
    arch = Arch("t_noisy", "noisy", objective="digits", head="prob", branch=nets.Noisy)
    assert own_path(arch, CFG)[0] == "batched-random"
    first = train(arch, CFG, datas([3, 4]), [0, 1], [3, 4])
    again = train(arch, CFG, datas([3, 4]), [0, 1], [3, 4])
    assert [r.curves for r in first] == [r.curves for r in again]


def test_unshared_branches_start_from_different_weights():
    net = create_model(MLP, CFG, 1).seed([1], [2])
    a, b = (part.weights()["1.weight"] for part in net.own_parts())
    assert not torch.equal(a, b)


def test_parameters_are_counted_from_the_module():
    single = sum(p.numel() for p in nets.mlp(14).parameters())
    mlp_head = (20 * 20 + 20) + (20 * 20 + 20) + (20 + 1)  # the built-in head: 20 -> 20 -> 20 -> 1
    assert create_model(MLP, CFG, 3).num_params() == 2 * single + mlp_head
    with_head = sum(p.numel() for p in nets.head().parameters())
    assert create_model(HEAD, CFG, 2).num_params() == single + with_head


@pytest.mark.parametrize("factory, words", [
    (nets.not_a_module, "returned str, not an nn.Module"),
    (nets.failing, "factory failed (ValueError: no such layer)"),
    (nets.wrong_shape, "to (3, 7), not (3, 10)"),
])
def test_a_wrong_factory_is_one_line_naming_the_architecture(factory, words):
    arch = Arch("t_wrong", "wrong", objective="comparison+digits", branch=factory)
    with pytest.raises(UserError, match="architecture t_wrong") as e:
        create_model(arch, CFG)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_factory_must_be_found_again_by_name():
    with pytest.raises(UserError, match="top of a module"):
        Arch("t_lambda", "lambda", objective="comparison+digits", branch=lambda size: nets.mlp(size)).validate()
    with pytest.raises(UserError, match="bn and dropout are flags of the built-in branch"):
        Arch("t_bn", "bn", objective="comparison+digits", bn=True, branch=nets.mlp).validate()
