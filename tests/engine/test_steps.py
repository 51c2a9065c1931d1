"""The training step: draws made before the step, torch's Adam against adam(), and the graphed step. The graphed step
is run here without a graph (the CPU has none): the same function on the same buffers, which is what a CUDA graph
replays; test_device.py runs it captured where a GPU is."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from digitpairs import UserError
from digitpairs.data.pairs import round_data
from digitpairs.engine import steps
from digitpairs.engine import training as train_module
from digitpairs.engine.checkpoint import Checkpoints
from digitpairs.engine.training import train
from digitpairs.model import create_model
from digitpairs.model.weights import from_bytes
from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config
from digitpairs.spec.registry import ARCHS
from digitpairs.store.specs import identity
from tests.support import fake_mnist, run_cli

CFG = Config(size=14, n_pairs=100, n_test=60, epochs=2, batch_size=20, precision="fp32", device="cpu")


def datas(seeds, cfg=CFG):
    m = fake_mnist()
    return [round_data(m, s, cfg.n_pairs, cfg.n_test, cfg.size, n_val=cfg.n_val) for s in seeds]


@pytest.mark.parametrize("share", [True, False])
def test_masks_drawn_before_the_step_are_the_ones_dropout_draws(share):
    """PairNet.draw_masks takes from the members' streams exactly what the dropout layers take in a forward."""
    arch = Arch("d", "d", share=share, dropout=True)
    x = torch.randn(3, 5, 2, 14, 14)
    outs = []
    for pre in (False, True):
        net = create_model(arch, CFG, 3).seed([1, 2, 3], [4, 5, 6]).train()
        if pre:
            for d, m in zip(net.dropouts(), net.draw_masks(5)):
                d.mask = m
        outs.append((net(x)[0], [g.get_state() for g in net.rngs]))
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))  # the streams end where they would


def test_adam_is_torchs_adam_under_onecycle():
    """adam() with its scalars in a tensor follows torch's Adam, beta1 and lr changing every step (OneCycle)."""
    torch.manual_seed(0)
    ps = [torch.randn(7, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    mine = [p.detach().clone() for p in ps]
    opt = torch.optim.Adam(ps, lr=3e-3, foreach=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=30)
    m, v, t = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps], [torch.zeros(()) for _ in ps]
    for step in range(1, 31):
        grads = [torch.randn_like(p) for p in ps]
        group = opt.param_groups[0]
        (b1, b2), lr = group["betas"], group["lr"]
        hyper = torch.tensor([1 - b1, -lr / (1 - b1 ** step), (1 - b2 ** step) ** 0.5])
        steps.adam(mine, grads, m, v, t, hyper, b2, group["eps"])
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt.step()
        sched.step()
    for p, q in zip(ps, mine):
        torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=1e-6)
    assert all(s.item() == 30 for s in t)


GRAPHED = [name for name, a in ARCHS.items() if a.dropout or a.extra.get("shift")] + ["siamese_nows"]


@pytest.mark.parametrize("name", GRAPHED)
def test_the_graphed_step_agrees_with_the_eager_one(name, monkeypatch):
    """The graphed step's function (input buffers, draws, adam()) trains as the eager step does, to rounding; a
    partial last minibatch (n_val = 10 leaves 90 pairs, 180 swapped, batches of 40) runs eagerly."""
    import dataclasses

    arch = dataclasses.replace(ARCHS[name], extra=ARCHS[name].extra | {"epochs": 2})
    cfg = CFG.replace(n_val=10, batch_size=40)
    seeds = [3, 4]
    eager = train(arch, cfg, datas(seeds, cfg), [0, 1], seeds, groups=[2])
    monkeypatch.setattr(train_module, "Step", steps.GraphedStep)
    graphed = train(arch, cfg, datas(seeds, cfg), [0, 1], seeds, groups=[2])
    for a, b in zip(eager, graphed):
        for ca, cb in zip(a.curves, b.curves):
            assert ca["train_loss"] == pytest.approx(cb["train_loss"], rel=1e-4)
            assert abs(ca["test_acc"] - cb["test_acc"]) <= 2 / cfg.n_test + 1e-9
        for key in from_bytes(a.weights):
            torch.testing.assert_close(from_bytes(a.weights)[key], from_bytes(b.weights)[key], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("first,then", [(steps.Step, steps.GraphedStep), (steps.GraphedStep, steps.Step)])
def test_a_checkpoint_resumes_under_the_other_step(first, then, tmp_path, monkeypatch):
    """A checkpoint written by one step (eager: Adam's step count on the CPU; graphed: adam() on torch's state)
    resumes under the other: it continues from the saved epoch, and ends where an uninterrupted run ends, to
    rounding."""
    cfg = CFG.replace(epochs=3, schedule="onecycle", shift=0.1)
    seeds = [3, 4]
    whole = train("siamese_ws_aux_bn_drop", cfg, datas(seeds), [0, 1], seeds, groups=[2])
    ckpt = Checkpoints(tmp_path / "unit")

    def interrupt(n):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "Step", first)
    with pytest.raises(KeyboardInterrupt):
        train("siamese_ws_aux_bn_drop", cfg, datas(seeds), [0, 1], seeds, groups=[2], checkpoints=ckpt,
              on_epoch=interrupt)
    monkeypatch.setattr(train_module, "Step", then)
    ticks = []
    resumed = train("siamese_ws_aux_bn_drop", cfg, datas(seeds), [0, 1], seeds, groups=[2], checkpoints=ckpt,
                    on_epoch=ticks.append)
    assert ticks == [2, 2, 2]
    for a, b in zip(whole, resumed):
        assert a.curves[0]["train_loss"] == pytest.approx(b.curves[0]["train_loss"], rel=1e-6)  # as saved
        assert a.curves[-1]["train_loss"] == pytest.approx(b.curves[-1]["train_loss"], rel=1e-4)


def test_cuda_graphs_need_a_gpu(tmp_path):
    with pytest.raises(UserError, match="--cuda-graphs"):
        train("siamese_ws", CFG.replace(cuda_graphs=True), datas([0]), [0], [0])
    for args in (["reproduce", "--quick", "--device", "cpu", "--cuda-graphs", "--store", tmp_path / "s.sqlite",
                  "--out", tmp_path / "o"],
                 ["bench", "--device", "cpu", "--cuda-graphs", "--epochs", "1", "--rounds", "1"]):
        p = run_cli(*args)
        assert p.returncode == 2 and "--cuda-graphs" in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.sqlite").exists()


def test_the_gpu_options_are_run_options_not_the_study():
    spec = {"arch": {}, "config": Config(cuda_graphs=True, matmul_conv=True, device="cpu").to_dict()}
    assert identity(spec) == identity({"arch": {}, "config": Config().to_dict()})


def about_to_capture(arch: Arch, cfg: Config, seeds: list[int]) -> steps.GraphedStep:
    """A GraphedStep on the CPU set up as on a GPU after its warm-up steps: its next full step captures."""
    data = train_module.stack(datas(seeds, cfg), len(seeds), torch.device("cpu"))
    net, opt, sched = train_module.build(arch, cfg, seeds, torch.device("cpu"), True, 5)
    step = steps.GraphedStep(net, opt, sched, cfg, data)
    step.stream, step.warm = object(), steps.GraphedStep.WARMUP
    return step


def test_a_failed_capture_is_one_line(monkeypatch):
    """Where this torch cannot capture an operation of the step, --cuda-graphs ends with a UserError naming the
    option and that operation's error, not a traceback, nor the error the capture's end raises after it (the
    capture mocked: the CPU has no graphs)."""
    import contextlib

    cfg = CFG.replace(epochs=1)
    step = about_to_capture(ARCHS["siamese_ws"], cfg, [3])
    net = step.net

    @contextlib.contextmanager
    def failing(graph, stream):  # as torch.cuda.graph: its end fails too once an operation inside has failed
        try:
            yield
        finally:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    def run(idx, draws):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: None)
    monkeypatch.setattr(torch.cuda, "graph", failing)
    monkeypatch.setattr(step, "run", run)
    idx = torch.arange(20).repeat(1, 1)
    with pytest.raises(UserError, match=r"^CUDA graphs: capturing the training step failed \(operation not "
                                        r"permitted when stream is capturing\); run with --no-cuda-graphs$"):
        step(idx, steps.draw(net, cfg, 20))


class HostReads(TorchDispatchMode):
    """Records the operators that a CUDA graph cannot capture: those that read a tensor back to the host (.item(),
    bool(), nonzero, boolean masks, unique) or make a tensor from host data (torch.tensor)."""

    NAMES = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "lift_fresh", "lift_fresh_copy",
                       "unique_dim", "_unique", "_unique2", "unique_consecutive", "equal", "is_nonzero",
                       "repeat_interleave", "bincount", "histc", "multinomial", "randperm"})

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        masks = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()) if i is not None)
        if name in self.NAMES or masks:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("matmul_conv", [False, True])
def test_the_step_reads_nothing_back_to_the_host(name, matmul_conv, monkeypatch):
    """What GraphedStep captures (its run(): forward, losses, backward, adam()) makes no host read and no tensor
    from host data, for every registered architecture, with every augmentation and the L2 auxiliary loss, on
    PyTorch's operators as on a GPU (the CPU's compiled kernels off): such an operator makes a capture fail."""
    from digitpairs.kernels import batchnorm as bnrelu
    from digitpairs.kernels import pool as ops

    monkeypatch.setattr(ops, "library", lambda: None)
    monkeypatch.setattr(bnrelu, "library", lambda: None)
    arch = ARCHS[name]
    cfg = train_module.arch_config(arch, CFG.replace(precision="bf16", matmul_conv=matmul_conv, shift=0.1,
                                                     rotate=5.0, scale=0.1, elastic=0.03, aux_loss="l2"))
    step = about_to_capture(arch, cfg, [3, 4])
    net = step.net
    guard = HostReads()  # the "capture" runs the step for real, under the guard

    class Graph:
        def replay(self):
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph, stream: guard)
    before = [p.detach().clone() for p in net.parameters()]
    step(torch.arange(20).repeat(len(net.rngs), 1), steps.draw(net, cfg, 20))
    assert isinstance(step.graph, Graph) and guard.seen == []
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))  # it did train
