"""Networks of your own (model/members.py): batched with torch.func where it can, the same numbers as separate runs,
a plain loop where it cannot, and one line for a factory that is wrong."""


import pytest
import torch

from digitpairs import Arch, UserError
from digitpairs.data.pairs import round_data
from digitpairs.engine.training import group_rounds, train
from digitpairs.model import create_model, members, own_path, swaps
from digitpairs.model.weights import from_bytes
from digitpairs.spec.config import Config
from tests.model import nets
from tests.support import assert_together_as_alone, fake_mnist

CFG = Config(size=14, n_pairs=100, n_test=60, epochs=2, batch_size=20, precision="fp32", device="cpu")
CONV = Arch("t_conv", "conv", objective="comparison+digits", branch=nets.conv_bn_drop)
MLP = Arch("t_mlp", "mlp", share=False, objective="comparison+digits", branch=nets.mlp)
HEAD = Arch("t_head", "head", objective="comparison+digits", branch=nets.mlp, head=nets.head)


def datas(seeds):
    m = fake_mnist()
    return [round_data(m, s, CFG.n_pairs, CFG.n_test, CFG.size) for s in seeds]


@pytest.mark.parametrize("arch", [CONV, MLP, HEAD], ids=lambda a: a.name)
def test_batched_rounds_equal_separate_plain_runs(arch, monkeypatch):
    """K rounds as one vmapped model follow the same math as K separate runs of the plain module (own data, init,
    order, BatchNorm statistics, dropout masks), to rounding, for a few steps."""
    seeds = [3, 4, 5]
    ds = datas(seeds)
    monkeypatch.setattr(members.Members, "looped", lambda self, device: False)  # vmap, convolutions too
    together = train(arch, CFG, ds, [0, 1, 2], seeds, groups=[3])
    monkeypatch.setattr(members.Members, "looped", lambda self, device: True)  # the members one by one
    for i, s in enumerate(seeds):
        (alone,) = train(arch, CFG, [ds[i]], [i], [s])
        for ca, ct in zip(alone.curves, together[i].curves):
            assert abs(ca["train_loss"] - ct["train_loss"]) < 1e-4
            assert abs(ca["test_acc"] - ct["test_acc"]) <= 1 / CFG.n_test + 1e-9
        wa, wt = from_bytes(alone.weights), from_bytes(together[i].weights)
        assert wa.keys() == wt.keys()
        for key in wa:  # BatchNorm's running statistics among them: per member
            assert torch.allclose(wa[key].float(), wt[key].float(), atol=1e-4), key


def test_on_the_cpu_convolutions_run_one_round_at_a_time_and_the_rest_batched():
    assert own_path(CONV, CFG, "cpu")[0] == "looped" and group_rounds(CONV, CFG, "cpu") == 1
    assert own_path(CONV, CFG, "cuda")[0] == "batched"
    assert own_path(MLP, CFG, "cpu")[0] == "batched" and group_rounds(MLP, CFG, "cpu") > 1


def test_on_the_cpu_a_conv_branch_computes_in_channels_last_memory_where_it_runs_so():
    """The engine hands a conv branch its images in channels-last memory, one member after another on the CPU; one
    that cannot take them (a .view that needs NCHW's strides: in training, in evaluation only, in backward only)
    or that draws random numbers of its own gets NCHW, and trains."""
    archs = {name: Arch(f"t_{name}", name, objective="comparison+digits", branch=getattr(nets, name))
             for name in ("ConvView", "ConvViewInEval", "ConvViewInBackward", "ConvNoisy")}
    seen = []
    for arch, cl in ((CONV, True), (MLP, False), *((a, False) for a in archs.values())):
        part = create_model(arch, CFG).own_parts()[0]
        assert part.info.channels_last is cl, arch.name
        hooks = [m.register_forward_hook(lambda m, i, o: seen.append(
            o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous()))
            for m in part._template[0].modules() if isinstance(m, torch.nn.Conv2d)]
        part.train()(torch.rand(1, 4, 1, 14, 14))
        for h in hooks:
            h.remove()
    assert seen == [True] + [False] * len(archs)  # the conv branch's convolution, then the others'
    for arch in archs.values():
        assert "NCHW" in own_path(arch, CFG, "cpu")[1] and "NCHW" not in own_path(arch, CFG, "cuda")[1]
        (result,) = train(arch, CFG, datas([3]), [0], [3])
        assert 0 <= result.test_acc <= 1
    assert "NCHW" not in own_path(CONV, CFG, "cpu")[1]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_channels_last_members_compute_what_nchw_ones_do(training):
    """Two members one after another, in channels-last memory and in NCHW: the same outputs and gradients, to
    rounding (member 1 reads its images at an offset into the stacked ones)."""
    net = create_model(CONV, CFG, 2).seed([1, 2], [3, 4])
    (part,) = net.own_parts()
    x = torch.rand(2, 6, 1, 14, 14)
    for d in part.dropouts:  # the same masks in both forwards
        d.mask = d.draw(6)
    outs = []
    for cl in (True, False):
        part.channels_last = cl
        for t in part.parameters():
            t.grad = None
        y = part.train(training)(x)
        if training:
            y.square().sum().backward()
        outs.append([y.detach()] + [t.grad for t in part.parameters() if training])
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


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


def test_lazy_layers_are_materialised_and_counted():
    arch = Arch("t_lazy", "lazy", objective="comparison+digits", branch=nets.lazy)
    net = create_model(arch, CFG, 2).seed([1, 2], [3, 4])
    assert net.num_params() == (14 * 14 * 32 + 32) + (32 * 10 + 10) + 861
    (r,) = train(arch, CFG.replace(epochs=1), datas([3]), [0], [3])
    assert r.test_acc > 0


def test_batchnorm_statistics_stay_per_member_under_vmap(monkeypatch):
    monkeypatch.setattr(members.Members, "looped", lambda self, device: False)
    test_batchnorm_statistics_stay_per_member()


def test_evaluation_takes_its_own_path():
    arch = Arch("t_eval", "eval", objective="digits", head="prob", branch=nets.TrainsBatchedEvaluatesPlain)
    (part,) = create_model(arch, CFG).own_parts()
    assert part.info.mode == "batched" and not part.info.eval_batched
    rounds = train(arch, CFG, datas([3, 4]), [0, 1], [3, 4])
    assert all(r.test_acc > 0 for r in rounds)


def test_a_plain_module_that_draws_nothing_takes_no_seed():
    arch = Arch("t_det", "det", objective="digits", head="prob", branch=nets.Deterministic)
    (part,) = create_model(arch, CFG).own_parts()
    assert part.info.mode == "plain" and not part.info.random
    assert create_model(Arch("t_b", "b", objective="digits", head="prob", branch=nets.Branchy), CFG).own_parts()[
        0].info.random is False


def test_a_round_equals_the_users_own_module_trained_by_hand():
    """One step of a round, as the engine computes it, against the user's module itself with the same weights:
    the same loss and the same gradients, to rounding."""
    import torch.nn.functional as F

    from digitpairs.data.pairs import target_of
    net = create_model(MLP, CFG, 1).seed([1], [2]).train()
    x = torch.rand(1, 8, 2, 14, 14)
    classes = torch.randint(0, 10, (1, 8, 2))
    cmp, digits = net(x)
    loss = F.binary_cross_entropy_with_logits(cmp[0], target_of(classes[0])) + 0.5 * F.cross_entropy(
        digits[0].reshape(-1, 10), classes[0].reshape(-1))
    loss.backward()
    first, second = (nets.mlp(14) for _ in range(2))
    for module, part in zip((first, second), net.own_parts()):
        module.load_state_dict({name: t[0].detach() for name, t in part.weights().items()})
    head = torch.nn.Sequential(*[torch.nn.Linear(20, 20), torch.nn.ReLU(), torch.nn.Linear(20, 20), torch.nn.ReLU(),
                                 torch.nn.Linear(20, 1)])
    with torch.no_grad():
        for linear, k in zip([head[0], head[2], head[4]], net.head):
            linear.weight.copy_(k.weight[0].T)
            linear.bias.copy_(k.bias[0, 0])
    d = torch.stack([first(x[0, :, 0:1]), second(x[0, :, 1:2])], dim=1)  # (B, 2, 10)
    c = head(d.softmax(-1).reshape(8, 20)).reshape(8)
    by_hand = F.binary_cross_entropy_with_logits(c, target_of(classes[0])) + 0.5 * F.cross_entropy(
        d.reshape(-1, 10), classes[0].reshape(-1))
    by_hand.backward()
    assert torch.allclose(loss, by_hand, atol=1e-6)
    for module, part in zip((first, second), net.own_parts()):
        grads = {name: t.grad[0] for name, t in part.weights().items()}
        for name, p in module.named_parameters():
            assert torch.allclose(p.grad, grads[name], atol=1e-6), name


def test_2x2_max_pooling_runs_on_the_engine_s_kernel_with_the_same_numbers():
    import copy

    mine = nets.conv_bn_drop(14).eval()
    swapped = swaps.mask_dropouts(copy.deepcopy(mine)).eval()
    assert isinstance(swapped[3], swaps.MaxPool2x2) and isinstance(mine[3], torch.nn.MaxPool2d)
    x = torch.rand(8, 1, 14, 14).contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = mine(a), swapped(b)
    (ya.square().sum()).backward()
    (yb.square().sum()).backward()
    assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)


def test_a_module_that_draws_is_known_by_the_generator_s_state_and_evaluation_may_not_draw():
    arch = Arch("t_sd", "sd", objective="digits", head="prob", branch=nets.StochasticDepth)
    (part,) = create_model(arch, CFG).own_parts()
    assert part.info.mode == "plain" and part.info.random
    first = train(arch, CFG, datas([3, 4]), [0, 1], [3, 4])
    again = train(arch, CFG, datas([3, 4]), [0, 1], [3, 4], threads=1)
    assert [r.curves for r in first] == [r.curves for r in again]
    noisy = Arch("t_noisy_eval", "noisy", objective="digits", head="prob", branch=nets.NoisyEvaluation)
    with pytest.raises(UserError, match="architecture t_noisy_eval: its branch draws random numbers in evaluation"):
        create_model(noisy, CFG)


CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@gpu
@pytest.mark.parametrize("arch", [CONV, MLP, HEAD], ids=lambda a: a.name)
def test_cuda_batched_rounds_equal_separate_runs(arch):
    """On the GPU every part of yours is batched with vmap (convolutions too): K rounds together follow the math of
    K separate runs, to the GPU's rounding."""
    seeds = [3, 4, 5]
    assert own_path(arch, CFG, "cuda")[0] == "batched" and group_rounds(arch, CFG, "cuda") > 1
    assert_together_as_alone(arch, CFG, datas(seeds), seeds, "cuda", 1e-3, 2 / CFG.n_test + 1e-9)


@gpu
@pytest.mark.parametrize("branch, mode", [(nets.Branchy, "plain"), (nets.Noisy, "batched-random"),
                                          (nets.StochasticDepth, "plain")])
def test_cuda_runs_what_vmap_cannot_take_and_repeats(branch, mode):
    """The paths that are not fully batched run on the GPU eagerly (no CUDA graphs, even when asked for), and the
    same rounds twice give the same curves."""
    arch = Arch(f"t_{mode}", mode, objective="digits", head="prob", branch=branch)
    assert own_path(arch, CFG, "cuda")[0] == mode
    cfg = CFG.replace(cuda_graphs=True)
    first = train(arch, cfg, datas([3, 4]), [0, 1], [3, 4], device="cuda")
    again = train(arch, cfg, datas([3, 4]), [0, 1], [3, 4], device="cuda")
    assert [r.curves for r in first] == [r.curves for r in again]
    assert all(r.test_acc > 0 for r in first)


def test_batchnorm_computes_in_float32_under_vmap_on_a_gpu_only():
    """On a GPU vmap's BatchNorm backward takes no bfloat16 input beside float32 statistics: there a BatchNorm of
    yours computes in float32 under vmap; outside vmap, and on the CPU, as your module says."""
    bn = swaps.mask_dropouts(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    x = torch.rand(4, 3, 2, 2, dtype=torch.bfloat16)
    assert bn(x).dtype == torch.bfloat16
    swaps.VMAP.on = True
    try:
        assert bn(x).dtype == torch.bfloat16  # the CPU: unchanged
        assert swaps.float_under_vmap(bn[0], ()) is None  # a BatchNorm called with its input by keyword
        if CUDA:
            assert bn.cuda()(x.cuda()).dtype == torch.float32
    finally:
        swaps.VMAP.on = False


@gpu
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graphs"])
def test_cuda_bf16_batched_batchnorm_trains_and_repeats(graphs):
    """The default precision (bf16) on the GPU, a conv branch with BatchNorm batched under vmap: it trains, with and
    without CUDA graphs, and the same rounds twice give the same curves."""
    cfg = CFG.replace(precision="bf16", cuda_graphs=graphs)
    first = train(CONV, cfg, datas([3, 4]), [0, 1], [3, 4], device="cuda")
    again = train(CONV, cfg, datas([3, 4]), [0, 1], [3, 4], device="cuda")
    assert [r.curves for r in first] == [r.curves for r in again]
    assert all(r.curves[-1]["train_loss"] < r.curves[0]["train_loss"] for r in first)
