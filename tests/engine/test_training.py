import torch

from digitpairs.data.pairs import round_data, sub_seed
from digitpairs.engine.training import optimizer, train
from digitpairs.model import create_model
from digitpairs.model.weights import from_bytes
from digitpairs.spec.config import Config
from tests.support import fake_mnist

CFG = Config(size=14, n_pairs=100, n_test=60, epochs=4, batch_size=20, precision="fp32", device="cpu")  # fp32: exact


def datas(seeds):
    m = fake_mnist()
    return [round_data(m, s, CFG.n_pairs, CFG.n_test, CFG.size) for s in seeds]


def test_loss_falls_and_curves_are_recorded():
    (res,) = train("siamese_ws_aux", CFG, datas([0]), [0], [0])
    losses = [c["train_loss"] for c in res.curves]
    assert len(res.curves) == CFG.epochs and losses[-1] < 0.7 * losses[0]
    assert res.test_acc == res.curves[-1]["test_acc"] and res.n_params > 0


def test_transfer_records_l_cmp_and_learns_digits():
    (res,) = train("transfer", CFG, datas([0]), [0], [0])
    assert all(c["train_cmp"] > 0 for c in res.curves)
    assert res.curves[-1]["train_loss"] < res.curves[0]["train_loss"]


def test_same_seed_same_numbers():
    a = train("siamese_ws_aux_bn_drop", CFG, datas([1]), [1], [1])[0]
    b = train("siamese_ws_aux_bn_drop", CFG, datas([1]), [1], [1])[0]
    assert a.curves == b.curves


def test_batched_rounds_equal_separate_runs():
    """K rounds trained at once follow the same math as K separate runs (own data, init, order, BN, dropout)."""
    cfg = CFG.replace(epochs=2)
    seeds = [3, 4, 5]
    for name in ("siamese_ws_aux_bn_drop", "siamese_nows", "transfer"):
        ds = datas(seeds)
        together = train(name, cfg, ds, [0, 1, 2], seeds, groups=[3])  # one batched model of 3 rounds
        for i, s in enumerate(seeds):
            (alone,) = train(name, cfg, [ds[i]], [i], [s])
            for ca, ct in zip(alone.curves, together[i].curves):
                assert abs(ca["train_loss"] - ct["train_loss"]) < 1e-4
                assert abs(ca["test_acc"] - ct["test_acc"]) <= 1 / cfg.n_test + 1e-9


def test_thread_groups_equal_one_batched_model():
    """With 3 threads, 5 rounds in groups of 2, 2 and 1 rounds train each group on its own thread: the same numbers as
    one batched model, every round once and in order, progress counted once per round and epoch; the caller's
    thread count is restored."""
    import threading

    cfg = CFG.replace(epochs=2)
    seeds = [3, 4, 5, 6, 7]
    ticks, names = [], set()

    def on_epoch(n):
        ticks.append(n)
        names.add(threading.current_thread().name)

    before = torch.get_num_threads()
    one = train("siamese_ws_aux_bn_drop", cfg, datas(seeds), [0, 1, 2, 3, 4], seeds, threads=1)
    groups = train("siamese_ws_aux_bn_drop", cfg, iter(datas(seeds)), [0, 1, 2, 3, 4], seeds, on_epoch=on_epoch,
                   threads=3, groups=[2, 2, 1])
    assert torch.get_num_threads() == before
    assert [r.round for r in groups] == [0, 1, 2, 3, 4] and [r.batch for r in groups] == [2, 2, 2, 2, 1]
    assert sorted(ticks) == [1, 1, 2, 2, 2, 2] and len(names) == 3
    for a, b in zip(one, groups):
        for ca, cb in zip(a.curves, b.curves):
            assert abs(ca["train_loss"] - cb["train_loss"]) < 1e-4
            assert abs(ca["test_acc"] - cb["test_acc"]) <= 1 / cfg.n_test + 1e-9


def test_a_failing_group_stops_the_others(monkeypatch):
    """A group that fails ends the call with its error at once; the other groups stop at their next step."""
    import pytest

    from digitpairs import UserError
    from digitpairs.engine import steps as steps_module

    steps = []
    real = steps_module.augment

    def failing(x, cfg, generators=None, draws=None):
        steps.append(x.shape[0])
        if x.shape[0] == 1:  # the one-round group
            raise UserError("boom")
        return real(x, cfg, generators, draws)

    monkeypatch.setattr(steps_module, "augment", failing)
    before = torch.get_num_threads()
    with pytest.raises(UserError, match="boom"):
        train("siamese_ws", CFG.replace(epochs=50), datas([1, 2, 3]), [0, 1, 2], [1, 2, 3], threads=2, groups=[2, 1])
    assert len(steps) < 50 * 5  # far from the 50 epochs x 5 steps the two-round group would have run
    assert torch.get_num_threads() == before


def test_batched_parameters_match_after_steps():
    cfg = CFG.replace(epochs=1)
    seeds = [3, 4]
    ds = datas(seeds)
    nets, grads = {}, {}
    for k, chosen in ((2, seeds), (1, seeds[1:])):
        net = create_model("siamese_ws_aux_bn", cfg, k).seed([sub_seed(s, 1) for s in chosen],
                                                               [sub_seed(s, 2) for s in chosen])
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        x = torch.stack([d.train_x[:20] for d in ds[-k:]])
        for step in range(3):
            cmp, digits = net(x)
            opt.zero_grad()
            (cmp.square().mean(1).sum() + digits.square().mean((1, 2, 3)).sum()).backward()
            if step == 0:
                grads[k] = net.branches[0].fc1.weight.grad.clone()
            opt.step()
        nets[k] = net
    assert torch.allclose(grads[1][0], grads[2][1], rtol=1e-4, atol=1e-7)  # the same gradient
    # Adam divides by sqrt(v): where a gradient is at float-noise level, grouped and plain convolutions' last-bit
    # differences become step differences up to lr, so parameters agree to a fraction of lr, not to the last bit
    for p1, p2 in zip(nets[1].parameters(), nets[2].parameters(), strict=True):
        assert (p1.reshape(-1) - p2.reshape(2, -1)[1]).abs().max() < 0.1 * cfg.lr


def test_adam_is_fused_for_a_network_of_yours_and_foreach_for_the_built_in_family_on_the_cpu():
    """A network of yours holds as many weight tensors as its module: one fused update for them all on the CPU; the
    built-in family keeps foreach (the per-parameter loop's numbers). A GPU fuses both (tests/engine/test_device.py
    trains there)."""
    from digitpairs import Arch
    from tests.model import nets
    yours = Arch("t_opt", "opt", objective="comparison+digits", branch=nets.conv_bn_drop)
    for arch, fused in ((yours, True), ("siamese_ws_aux_bn", False)):
        (group,) = optimizer(create_model(arch, CFG, 1), CFG, torch.device("cpu")).param_groups
        assert bool(group["fused"]) is fused and bool(group["foreach"]) is not fused


def test_bf16_trains_and_is_deterministic():
    cfg = CFG.replace(precision="bf16", epochs=3)
    a = train("transfer", cfg, datas([2]), [2], [2])[0]
    b = train("transfer", cfg, datas([2]), [2], [2])[0]
    assert a.curves == b.curves and all(c["train_cmp"] == c["train_cmp"] for c in a.curves)  # finite, no NaN
    assert a.curves[-1]["train_loss"] < a.curves[0]["train_loss"]


def test_levers_keep_rounds_independent():
    """With an ensemble, augmentation, OneCycle and test-time views, rounds trained together still equal rounds
    trained apart, and the round's numbers come from its members' averaged probabilities."""
    import dataclasses

    from digitpairs.spec.registry import ARCHS

    arch = ARCHS["ws_bn_aug_bayes"]
    arch = dataclasses.replace(arch, extra=arch.extra | {"epochs": 2, "members": 2})
    seeds = [3, 4]
    ds = datas(seeds)
    together = train(arch, CFG, ds, [0, 1], seeds, threads=1)
    (alone,) = train(arch, CFG, [ds[1]], [1], [seeds[1]])
    for ca, ct in zip(alone.curves, together[1].curves):
        assert abs(ca["train_loss"] - ct["train_loss"]) < 1e-4
        assert abs(ca["test_acc"] - ct["test_acc"]) <= 1 / CFG.n_test + 1e-9
    assert together[0].n_params == 2 * create_model("ws_bn_aug_bayes", CFG).num_params()


def test_test_time_views_change_only_the_final_evaluation():
    cfg = CFG.replace(epochs=3, shift=0.1)
    plain = train("siamese_ws_aux_bn", cfg, datas([2]), [2], [2])[0]
    views = train("siamese_ws_aux_bn", cfg.replace(tta=5), datas([2]), [2], [2])[0]
    assert plain.curves[:-1] == views.curves[:-1]  # the same training and per-epoch curves
    assert [c["train_loss"] for c in plain.curves] == [c["train_loss"] for c in views.curves]


def test_onecycle_and_label_smoothing_train():
    res = train("siamese_ws_aux_bn", CFG.replace(schedule="onecycle", lr=3e-3, label_smoothing=0.1),
                datas([0]), [0], [0])[0]
    assert res.curves[-1]["train_loss"] < res.curves[0]["train_loss"]


def test_a_rounds_weights_load_into_a_single_model():
    """The weights a batched group returns for round i are the model of round i alone: loaded into a PairNet of one
    member they give that round's test accuracy."""
    from digitpairs.engine.evaluate import evaluate

    seeds = [3, 4]
    ds = datas(seeds)
    results = train("siamese_ws_aux_bn", CFG, ds, [0, 1], seeds, groups=[2])
    for res, d in zip(results, ds):
        net = create_model("siamese_ws_aux_bn", CFG)
        net.load_state_dict(from_bytes(res.weights))
        assert res.norm == (d.mean, d.std)
        correct = evaluate(net, d.test_x.unsqueeze(0), d.test_classes.unsqueeze(0), CFG.precision)
        assert correct.item() == res.test_correct


def test_a_group_resumes_from_its_checkpoint_bit_for_bit(tmp_path):
    """Interrupted after epoch 2 of 4, then trained again with the same checkpoint folder: it trains epochs 3 and 4
    only, and its curves and weights equal an uninterrupted run's to the last bit (augmentation, dropout and OneCycle
    included: every random generator and the schedule are in the checkpoint)."""
    import pytest

    from digitpairs.engine.checkpoint import Checkpoints

    cfg = CFG.replace(shift=0.1, schedule="onecycle")
    seeds = [3, 4]
    whole = train("siamese_ws_aux_bn_drop", cfg, datas(seeds), [0, 1], seeds, groups=[2])
    ckpt = Checkpoints(tmp_path / "unit")
    ticks = []

    def interrupt(n):
        ticks.append(n)
        if len(ticks) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("siamese_ws_aux_bn_drop", cfg, datas(seeds), [0, 1], seeds, groups=[2], checkpoints=ckpt,
              on_epoch=interrupt)
    assert ckpt.path([0, 1]).is_file()
    ticks.clear()
    resumed = train("siamese_ws_aux_bn_drop", cfg, datas(seeds), [0, 1], seeds, groups=[2], checkpoints=ckpt,
                    on_epoch=ticks.append)
    assert ticks == [4, 2, 2]  # the 2 epochs done, counted at once; then 2 more epochs trained
    for a, b in zip(whole, resumed):
        assert a.curves == b.curves
        assert all(torch.equal(from_bytes(a.weights)[key], from_bytes(b.weights)[key]) for key in from_bytes(a.weights))
    other = train("siamese_ws_aux_bn_drop", cfg.replace(lr=2e-3), datas(seeds), [0, 1], seeds, groups=[2],
                  checkpoints=ckpt, on_epoch=ticks.append)  # another config: the checkpoint is not its own
    assert other[0].curves != whole[0].curves and len(other[0].curves) == cfg.epochs


def test_each_run_records_which_operators_trained_it(monkeypatch):
    """The compiled kernels and PyTorch's operators sum in other orders: a run says which trained it."""
    from digitpairs.kernels import batchnorm, build, pool

    m = fake_mnist()
    data = [round_data(m, 0, 40, 40, 14)]
    cfg = Config(size=14, n_pairs=40, n_test=40, epochs=1, batch_size=20, device="cpu")
    (compiled,) = train("siamese_ws", cfg, data, [0], [0])
    assert compiled.kernels == ("compiled kernels" if build.library() else "PyTorch's operators")
    for module in (build, pool, batchnorm):
        monkeypatch.setattr(module, "library", lambda: None)
    (plain,) = train("siamese_ws", cfg, data, [0], [0])
    assert plain.kernels == "PyTorch's operators"
