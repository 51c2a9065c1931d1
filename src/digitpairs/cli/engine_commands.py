"""The commands that build networks or ask torch: `digitpairs list` (each architecture's #params), `digitpairs
bench` and `digitpairs --version`."""

import dataclasses

import torch

from digitpairs import device as devices
from digitpairs.model import create_model
from digitpairs.runner import bench
from digitpairs.spec.config import Config
from digitpairs.spec.provenance import code_version
from digitpairs.spec.registry import ARCHS, arch_config, get_arch


def cmd_list(args) -> int:
    """Every registered architecture (built in, from --plugin and from installed plugins), its #params built at
    --size, and the plugin it came from."""
    cfg = Config().replace(size=args.size)
    print(f"{'name':<24} {'label':<24} {'objective':<18} {'head':<10} {'branch':<22} {'#params':>8} {'report':>8}  "
          "from")
    for name, arch in ARCHS.items():
        report = f"{arch.report[2]:,}" if arch.report else ""
        mine = [arch.factory("branch").__qualname__] if arch.branch is not None else []
        branch = ",".join(mine + ["shared" if arch.share else "two"] + ["bn"] * arch.bn + ["dropout"] * arch.dropout)
        head = arch.head if isinstance(arch.head, str) else arch.head.__qualname__
        print(f"{name:<24} {arch.label:<24} {arch.objective:<18} {head:<10} {branch:<22} "
              f"{create_model(name, cfg).num_params():>8,} {report:>8}  {arch.plugin or 'built in'}")
    return 0


def cmd_bench(args) -> int:
    arch = get_arch(args.arch)  # its own settings first, then the command line's
    dev = args.device or Config().device
    graphs = devices.graphs_by_default(dev) if args.cuda_graphs is None else args.cuda_graphs
    base = Config().replace(size=args.size, device=dev,  # checked before its own settings
                            cuda_graphs=graphs, matmul_conv=bool(args.matmul_conv))
    cfg = arch_config(arch, base).replace(epochs=args.epochs, precision=args.precision)
    devices.check(cfg.device, cfg.cuda_graphs)
    bench.run(dataclasses.replace(arch, extra={}), cfg, args.rounds, args.data_dir, device=cfg.device)
    return 0


def cmd_version(args) -> int:
    """digitpairs's version, the hash of the code that decides the numbers (and the git commit where there is one),
    torch's version, and where `--device auto` trains here."""
    code = code_version()
    commit = f", git commit {code['git_commit'][:12]}" if code["git_commit"] else ""
    print(f"digitpairs {code['package_version']} (code hash {code['code_hash']}{commit}); torch {torch.__version__}; "
          f"--device auto: {devices.name(devices.resolve('auto'))}")
    return 0
