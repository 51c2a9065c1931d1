"""Where an epoch of the engine goes: one group of 3 rounds (--rounds), one epoch (its training steps and its
evaluation), one torch thread, bf16, channels_last, freed memory kept (as a study's worker processes), under
torch.profiler; the operators summed by kind. docs/benchmarks.md's profile tables come from it (those before "One
round at a time, faster" from a version that kept no freed memory).

    python scripts/profile_step.py [--size 28|14] [--arch NAME] [--rounds K]
    python scripts/profile_step.py --size 14 --arch residual_ws_aux --rounds 1   # a network of yours, as it trains
    CC=false python scripts/profile_step.py ...   # without the compiled kernels (no C compiler: PyTorch's ops)
"""

import argparse
import collections
import dataclasses
import time

import torch
from torch.profiler import ProfilerActivity, profile

from digitpairs.base.procfs import keep_freed_memory
from digitpairs.data import mnist
from digitpairs.data.pairs import round_for
from digitpairs.engine import train
from digitpairs.kernels import library
from digitpairs.spec.config import Config
from digitpairs.spec.registry import get_arch

KINDS = [  # (row, substrings of operator names); the first that matches takes an operator
    ("convolution forward (oneDNN)", ["mkldnn_convolution"]),
    ("convolution backward (oneDNN)", ["convolution_backward"]),
    ("first convolution + pooling, fused (kernels/pool.py)", ["ConvPool2x2", "ops::conv_pool2x2"]),
    ("matmul (bmm, baddbmm, mm)", ["aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm"]),
    ("max-pool backward", ["max_pool2d_with_indices_backward", "MaxPool2x2Backward"]),
    ("max-pool forward", ["max_pool2d", "MaxPool2x2", "ops::max_pool2x2"]),
    ("fill_ / zero_", ["aten::fill_", "aten::zero_"]),
    ("BatchNorm (+ ReLU where fused)", ["batch_norm", "BatchNormReLU"]),
    ("ReLU", ["clamp_min", "threshold_backward", "aten::relu"]),
    ("copies and casts", ["aten::copy_"]),
    ("minibatch gather (index)", ["aten::index"]),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=28, help="image side, 28 or 14 (default: 28)")
    p.add_argument("--arch", default="siamese_ws_aux_bn", help="architecture (default: siamese_ws_aux_bn)")
    p.add_argument("--rounds", type=int, default=3, help="rounds in the group (default: 3; on the CPU a network "
                   "of yours with convolutions trains one at a time)")
    args = p.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as a study's processes have it (runner/units.py)
    arch = get_arch(args.arch)
    arch = dataclasses.replace(arch, extra={**arch.extra, "epochs": 1})  # one epoch, whatever the architecture sets
    cfg = Config(size=args.size)
    m = mnist.load(None, log=lambda *a: None)
    rounds = list(range(args.rounds))
    datas = [round_for(m, cfg, r) for r in rounds]

    def run():
        train(arch, cfg, datas, rounds, rounds, threads=1, groups=[args.rounds], device="cpu")

    run()  # warm-up (and the kernels' compilation, if any)
    times = []
    for _ in range(3):
        start = time.thread_time()
        run()
        times.append(time.thread_time() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    kinds = collections.Counter()
    for e in events:
        kind = next((row for row, keys in KINDS if any(k in e.key for k in keys)), "everything else")
        kinds[kind] += e.self_cpu_time_total
    adam = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    kinds["everything else"] -= adam  # Adam's operators are counted once, in its own row
    print(f"{args.arch} at {args.size}x{args.size}, compiled kernels: {'yes' if library() else 'no'}; "
          f"CPU time per epoch {min(times):.3f} s (best of 3), {total / 1e6:.3f} s under the profiler")
    print("| part | ms per epoch | share |\n|---|---:|---:|")
    for row, _ in KINDS:
        print(f"| {row} | {kinds[row] / 1e3:.0f} | {100 * kinds[row] / total:.1f}% |")
    print(f"| Adam step | {adam / 1e3:.0f} | {100 * adam / total:.1f}% |")
    print(f"| everything else | {kinds['everything else'] / 1e3:.0f} | {100 * kinds['everything else'] / total:.1f}% |")


if __name__ == "__main__":
    main()
