import pytest
import torch

from digitpairs import UserError
from digitpairs.data.pairs import round_data
from digitpairs.model import create_model
from digitpairs.runner import bench
from digitpairs.spec.config import Config
from digitpairs.spec.registry import ARCHS, arch_config
from tests.support import fake_mnist


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("size", [28, 14])
def test_the_reference_is_the_same_network(name, size):
    """The plain module has the engine's layers: the same parameter count, the same output shapes."""
    cfg = arch_config(ARCHS[name], Config(size=size))
    plain = bench.PlainNet(ARCHS[name], cfg)
    assert sum(p.numel() for p in plain.parameters()) == create_model(name, cfg).num_params()
    cmp, digits = plain(torch.randn(5, 2, size, size))
    assert digits.shape == (5, 2, 10) and cmp.shape == (5,)
    assert plain.predict(cmp, digits).shape == (5,)


@pytest.mark.parametrize("name", ["siamese_nows", "siamese_ws_aux_bn_drop", "transfer", "ws_bn_aug_bayes"])
def test_the_reference_loop_learns_and_repeats(name):
    cfg = arch_config(ARCHS[name], Config(size=14)).replace(n_pairs=200, n_test=100, epochs=3, batch_size=50)
    data = round_data(fake_mnist(), 0, cfg.n_pairs, cfg.n_test, cfg.size)
    acc = bench.plain_run(ARCHS[name], cfg, data, 0, "cpu")
    assert acc == bench.plain_run(ARCHS[name], cfg, data, 0, "cpu")
    assert 0.6 < acc <= 1 or not ARCHS[name].learns_digits  # the fake digits are learnt through the digit loss


def test_bench_prints_both_loops_and_the_machine(monkeypatch):
    monkeypatch.setattr(bench.mnist, "load", lambda *a, **k: fake_mnist())
    monkeypatch.setattr(bench, "matmul_gflops", lambda *a, **k: 1.0)
    lines = []
    cfg = Config(size=14, n_pairs=100, n_test=60, epochs=1, batch_size=50)
    speedup = bench.run(ARCHS["siamese_ws_aux"], cfg, 2, log=lines.append)
    assert speedup > 0 and lines[-1] == f"speedup {speedup:.2f}"
    assert any(ln.startswith("machine: ") for ln in lines) and lines[2].startswith("warm-up: ") and len(lines) == 6
    with pytest.raises(UserError, match="members must be 1"):
        bench.run(ARCHS["siamese_ws_aux"], cfg.replace(members=2), 2, log=lines.append)


def test_balanced_groups():
    assert bench.balanced_groups(10, 2, 3) == [3, 3, 2, 2]
    assert bench.balanced_groups(10, 2, 13) == [5, 5]
    assert bench.balanced_groups(3, 4, 3) == [1, 1, 1]


@pytest.mark.slow
def test_the_bench_s_workers_train_the_rounds_as_this_process_does(real_data_dir):
    """A network of yours trained one round at a time: the bench's worker processes (one thread each) give the
    rounds the numbers one thread of this process gives them."""
    from digitpairs import Arch
    from digitpairs.data import mnist
    from digitpairs.data.pairs import round_for
    from digitpairs.engine import train
    from tests.model import nets

    arch = Arch("t_conv_bench", "conv", objective="comparison+digits", branch=nets.conv_bn_drop)
    cfg = Config(size=14, n_pairs=200, n_test=100, epochs=1, device="cpu")
    m = mnist.load(real_data_dir, log=lambda *a: None)
    datas = [round_for(m, cfg, r) for r in range(2)]
    seeds = [cfg.seed + r for r in range(2)]
    engine, close = bench.engine_loop(arch, cfg, datas, seeds, [1, 1], torch.device("cpu"), 2, real_data_dir)
    try:
        in_workers = engine(2)
    finally:
        close(at_once=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = [r.test_acc for r in train(arch, cfg.replace(epochs=2), datas, [0, 1], seeds, groups=[1, 1],
                                           threads=1)]
    finally:
        torch.set_num_threads(threads)
    assert in_workers == here and len(set(here)) == 2, (in_workers, here)
