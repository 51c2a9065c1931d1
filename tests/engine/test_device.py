"""The device: `auto`, `cpu`, `cuda`. Tests that need a GPU are marked `gpu` and skipped without one; the rest run in
CI on the CPU."""

import pytest
import torch

from digitpairs import UserError, device
from digitpairs.data.pairs import round_data
from digitpairs.engine.training import group_rounds, train
from digitpairs.spec.config import Config
from tests.support import assert_together_as_alone, fake_mnist, run_cli

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
CFG = Config(size=14, n_pairs=100, n_test=60, epochs=3, batch_size=20, precision="fp32")


def datas(seeds):
    m = fake_mnist()
    return [round_data(m, s, CFG.n_pairs, CFG.n_test, CFG.size) for s in seeds]


def test_auto_is_the_cpu_without_a_gpu():
    assert device.resolve("auto").type == ("cuda" if CUDA else "cpu")
    assert device.resolve("cpu") == torch.device("cpu")
    assert device.name(torch.device("cpu"))  # the CPU's model name, for the store


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CUDA", "", "cpu0"])
def test_malformed_device_is_refused(bad):
    with pytest.raises(UserError, match="device must be"):
        Config().replace(device=bad)


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path):
    with pytest.raises(UserError, match="sees no CUDA GPU"):
        device.resolve("cuda")
    p = run_cli("reproduce", "--quick", "--device", "cuda", "--store", tmp_path / "s.sqlite", "--out", tmp_path / "o")
    assert p.returncode == 2 and "sees no CUDA GPU" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "s.sqlite").exists() or "runs" not in p.stdout


def test_results_name_the_device():
    (res,) = train("siamese_ws", CFG.replace(epochs=1), datas([0]), [0], [0], device="cpu")
    assert res.device == device.name(torch.device("cpu"))
    assert res.test_correct == round(res.test_acc * CFG.n_test) and res.n_test == CFG.n_test


def test_gpu_groups_are_whole_units():
    assert group_rounds("siamese_ws", CFG, "cpu") >= 2
    if CUDA:
        assert group_rounds("siamese_ws", CFG, "cuda") == 10


@gpu
@pytest.mark.parametrize("name", ["siamese_ws_aux_bn_drop", "siamese_nows", "transfer", "ws_bn_aug_bayes"])
def test_cuda_batched_rounds_equal_separate_runs(name):
    """On the GPU too, K rounds trained as one batched model follow the math of K separate runs (fp32)."""
    import dataclasses

    from digitpairs.spec.registry import ARCHS

    arch = ARCHS[name]
    arch = dataclasses.replace(arch, extra=arch.extra | {"epochs": 2})
    seeds = [3, 4, 5]
    assert_together_as_alone(arch, CFG, datas(seeds), seeds, "cuda", 1e-3, 2 / CFG.n_test + 1e-9)


@gpu
def test_cuda_same_seed_same_numbers():
    """Deterministic algorithms: the same rounds twice on one GPU give the same curves, bf16 included."""
    cfg = CFG.replace(precision="bf16")
    a = train("ws_bn_aug_bayes", cfg, datas([1, 2]), [1, 2], [1, 2], device="cuda")
    b = train("ws_bn_aug_bayes", cfg, datas([1, 2]), [1, 2], [1, 2], device="cuda")
    assert [r.curves for r in a] == [r.curves for r in b]
    assert a[0].device == torch.cuda.get_device_name()


@gpu
def test_cuda_learns_like_the_cpu():
    """Not bit-equal (other kernels), but the same training: final losses close, accuracies within a few pairs."""
    cpu = train("siamese_ws_aux_bn", CFG, datas([0]), [0], [0], device="cpu")[0]
    cuda = train("siamese_ws_aux_bn", CFG, datas([0]), [0], [0], device="cuda")[0]
    assert abs(cpu.curves[0]["train_loss"] - cuda.curves[0]["train_loss"]) < 1e-3
    assert abs(cpu.test_acc - cuda.test_acc) <= 0.1


@gpu
@pytest.mark.parametrize("name", ["siamese_ws_aux_bn_drop", "ws_bn_aug_bayes", "siamese_nows", "yours"])
def test_cuda_graphs_agree_with_the_plain_gpu_path(name, monkeypatch):
    """--cuda-graphs: the step captured once per group and replayed (all but the 3 warm-up steps of each group's
    full minibatches) trains as the plain GPU path does, to rounding; a partial last minibatch runs eagerly. "yours":
    a conv branch of a user's kind (BatchNorm, dropout, pooling), batched with vmap."""
    import dataclasses

    from digitpairs import Arch
    from digitpairs.engine import steps
    from digitpairs.spec.registry import ARCHS
    from tests.model import nets

    arch = (Arch("t_conv", "conv", objective="comparison+digits", branch=nets.conv_bn_drop) if name == "yours"
            else ARCHS[name])
    arch = dataclasses.replace(arch, extra=arch.extra | {"epochs": 3})
    cfg = CFG.replace(n_val=10, batch_size=40)  # 90 pairs, 180 swapped: 4 full minibatches and one of 20
    m, seeds = fake_mnist(), [3, 4]
    ds = [round_data(m, s, cfg.n_pairs, cfg.n_test, cfg.size, n_val=cfg.n_val) for s in seeds]
    plain = train(arch, cfg, ds, [0, 1], seeds, device="cuda")
    replays = []
    real = steps.GraphedStep.replay

    def spy(self, idx, draws):
        real(self, idx, draws)
        replays.append(self.graph is not None)

    monkeypatch.setattr(steps.GraphedStep, "replay", spy)
    graphed = train(arch, cfg.replace(cuda_graphs=True), ds, [0, 1], seeds, device="cuda")
    assert len(replays) == 4 * 3 and sum(replays) == 4 * 3 - steps.GraphedStep.WARMUP
    for a, b in zip(plain, graphed):
        for ca, cb in zip(a.curves, b.curves):
            assert ca["train_loss"] == pytest.approx(cb["train_loss"], rel=1e-3)
            assert abs(ca["test_acc"] - cb["test_acc"]) <= 2 / cfg.n_test + 1e-9


@gpu
def test_cuda_graphs_same_seed_same_numbers():
    cfg = CFG.replace(precision="bf16", cuda_graphs=True)
    a = train("ws_bn_aug_bayes", cfg, datas([1, 2]), [1, 2], [1, 2], device="cuda")
    b = train("ws_bn_aug_bayes", cfg, datas([1, 2]), [1, 2], [1, 2], device="cuda")
    assert [r.curves for r in a] == [r.curves for r in b]


@gpu
def test_cuda_matmul_conv_agrees_with_cudnn_and_repeats():
    """--matmul-conv on the GPU: the same training as cuDNN's grouped convolutions, to rounding; twice the same
    (with CUDA graphs too)."""
    cfg = CFG.replace(precision="bf16")
    plain = train("siamese_ws_aux_bn_drop", cfg, datas([1, 2]), [1, 2], [1, 2], device="cuda")
    runs = [train("siamese_ws_aux_bn_drop", cfg.replace(matmul_conv=True, cuda_graphs=True), datas([1, 2]), [1, 2],
                  [1, 2], device="cuda") for _ in range(2)]
    assert [r.curves for r in runs[0]] == [r.curves for r in runs[1]]
    for a, b in zip(plain, runs[0]):
        assert a.curves[0]["train_loss"] == pytest.approx(b.curves[0]["train_loss"], rel=1e-2)
        assert abs(a.test_acc - b.test_acc) <= 0.1
