"""Where an epoch of the engine goes on a GPU, with and without the GPU run options: one group of 10 rounds, in one
process, one configuration after the other.

For each of: plain, --cuda-graphs, --matmul-conv, both: the seconds per epoch (the difference between a run of
EPOCHS + 4 epochs and one of EPOCHS, so set-up and the first epoch's lazy work are left out). Then, for the
configuration named by the flags, one run under torch.profiler: the kernels launched and the GPU time by kind.
docs/benchmarks.md's GPU profile comes from it.

    python scripts/profile_gpu.py [--arch NAME] [--size 28|14] [--cuda-graphs] [--matmul-conv] [--device cuda]
"""

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from digitpairs.data import mnist
from digitpairs.data.pairs import round_for
from digitpairs.engine import train
from digitpairs.spec.config import Config

KINDS = [  # (row, substrings of kernel names); the first that matches takes a kernel
    ("convolution (cuDNN)", ["conv", "cudnn", "implicit_gemm", "wgrad", "dgrad"]),
    ("matmul (cuBLAS)", ["gemm", "cublas", "Kernel2"]),
    ("unfold / fold (im2col, col2im)", ["im2col", "col2im"]),
    ("max-pool", ["max_pool"]),
    ("BatchNorm", ["batch_norm", "bn_"]),
    ("Adam (foreach / fused)", ["multi_tensor_apply", "fused_adam"]),
    ("copies", ["copy", "Memcpy", "memcpy"]),
    ("index / gather", ["index"]),
]
OPTIONS = {"plain": {}, "--cuda-graphs": {"cuda_graphs": True}, "--matmul-conv": {"matmul_conv": True},
           "both": {"cuda_graphs": True, "matmul_conv": True}}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="siamese_ws_aux", help="architecture (default: siamese_ws_aux, the bench's)")
    p.add_argument("--size", type=int, default=28, choices=(14, 28), help="image side (default: 28)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the shorter run (default: 2)")
    p.add_argument("--rounds", type=int, default=10, help="rounds in the group (default: 10)")
    p.add_argument("--device", default="cuda", help="default: cuda (cpu only to try the script)")
    p.add_argument("--cuda-graphs", action="store_true", help="profile with CUDA graphs")
    p.add_argument("--matmul-conv", action="store_true", help="profile with the matmul convolutions")
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else lambda: None
    base = Config(size=args.size, device=args.device)
    m = mnist.load(None, log=lambda *a: None)
    datas = [round_for(m, base, r) for r in range(args.rounds)]
    rounds = list(range(args.rounds))

    def run(epochs: int, **options) -> float:
        sync()
        start = time.perf_counter()
        train(args.arch, base.replace(epochs=epochs, **options), datas, rounds, rounds, groups=[args.rounds])
        sync()
        return time.perf_counter() - start

    print(f"{args.arch} at {args.size}x{args.size}, {args.rounds} rounds in one group, on "
          f"{torch.cuda.get_device_name() if cuda else 'the CPU'}")
    for name, options in OPTIONS.items():
        if options.get("cuda_graphs") and not cuda:
            continue
        run(1, **options)  # warm-up: cuDNN and cuBLAS handles, the first capture
        per_epoch = (run(args.epochs + 4, **options) - run(args.epochs, **options)) / 4
        print(f"{name:<14} {per_epoch * 1e3:7.1f} ms per epoch")
    chosen = {"cuda_graphs": args.cuda_graphs, "matmul_conv": args.matmul_conv}
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda
    with profile(activities=activities) as prof:
        run(args.epochs, **chosen)
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in kernels) or 1
    kinds = collections.Counter()
    for e in kernels:
        kinds[next((row for row, keys in KINDS if any(k in e.key for k in keys)), "everything else")] += \
            e.self_device_time_total
    print(f"profiled {chosen}, {args.epochs} epochs: {sum(e.count for e in kernels)} kernels, "
          f"{total / 1e3:.1f} ms of GPU time")
    print("| part | GPU ms | share |\n|---|---:|---:|")
    for row, t in kinds.most_common():
        print(f"| {row} | {t / 1e3:.1f} | {100 * t / total:.1f}% |")


if __name__ == "__main__":
    main()
