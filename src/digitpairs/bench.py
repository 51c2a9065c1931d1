"""`digitpairs bench`: the plain reference loop against the engine, same architecture and rounds, one process.

Reference: one model at a time, fp32, NCHW, PyTorch's default threads: what a straightforward loop does.
Engine: train() as the studies use it: the rounds in groups of batched rounds, one group per thread at a time
(train.py), channels_last, in the given precision.
Both train the same rounds from the same seeds; the figures are model-epochs per second, and effective GFLOP/s
(the model's analytic FLOPs over wall time) beside the machine's measured matmul rate.
"""

import time

import torch

from digitpairs import mnist
from digitpairs.config import Arch, Config
from digitpairs.models import create_model
from digitpairs.pairs import round_for
from digitpairs.train import train


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def run(arch: Arch, cfg: Config, rounds: int, data_dir=None, log=print) -> float:
    """Print the comparison; return the speedup (engine model-epochs/s over the reference's)."""
    m = mnist.load(data_dir, log=lambda *a: None)
    datas = [round_for(m, cfg, r) for r in range(rounds)]
    seeds = [cfg.seed + r for r in range(rounds)]
    n_train = datas[0].train_x.shape[0]
    # per model-epoch: forward + backward (3x forward) on the training pairs, forward on the test pairs
    flops = create_model(arch, cfg).flops_per_pair() * (3 * n_train + cfg.n_test)
    log(f"bench {arch.name}: {rounds} rounds x {cfg.epochs} epochs at {cfg.size}x{cfg.size}, "
        f"{flops / 1e9:.1f} GFLOP per model-epoch, {torch.get_num_threads()} threads")
    log(f"matmul rate: fp32 {matmul_gflops(torch.float32):.0f} GFLOP/s, bf16 {matmul_gflops(torch.bfloat16):.0f} GFLOP/s")
    rates = {}
    for name, fn in (
        ("reference", lambda: [train(arch, cfg.replace(precision="fp32"), [d], [r], [s], channels_last=False)
                               for r, (d, s) in enumerate(zip(datas, seeds))]),
        ("engine", lambda: train(arch, cfg, datas, list(range(rounds)), seeds)),
    ):
        start = time.perf_counter()
        results = fn()
        wall = time.perf_counter() - start
        results = [r for rs in results for r in rs] if name == "reference" else results
        rates[name] = rounds * cfg.epochs / wall
        acc = sum(r.test_acc for r in results) / len(results)
        log(f"{name:<9} {wall:7.1f} s  {rates[name]:6.2f} model-epochs/s  {rates[name] * flops / 1e9:6.1f} GFLOP/s "
            f"effective  (mean test acc {acc:.4f}, {cfg.precision if name == 'engine' else 'fp32'})")
    speedup = rates["engine"] / rates["reference"]
    log(f"speedup {speedup:.2f}")
    return speedup
