"""One training loop and one evaluator for every architecture, over K members (rounds) at once.

Member k's loss is the mean over its own minibatch; the members' losses are summed, so each member's gradient,
Adam state (Adam is elementwise) and update are those of a separate run, up to rounding: a batched convolution
or matmul may sum in another order than a single model's, so the numbers agree to the last bits for a few steps,
and after a whole training a round's numbers depend on the group it trained in. The groups are therefore fixed:
round r of a study trains in group r // g, with g chosen once for the study (`group_rounds`), so reruns, resumes
and shared studies give the same numbers.

On the CPU a call's groups are trained by as many Python threads as it has torch threads, each on one torch thread:
the kernels of this small network scale poorly across threads, independent groups scale like processes, and a
group small enough for its activations to stay in cache runs faster per round (docs/benchmarks.md). On a GPU a
group is a whole unit: the rounds' data stay on the device and one batched model trains them.
"""

import itertools
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed

import torch

from digitpairs import device as devices
from digitpairs.base.errors import UserError
from digitpairs.data.pairs import PairData, sub_seed
from digitpairs.engine.answers import per_round
from digitpairs.engine.checkpoint import Checkpoints
from digitpairs.engine.evaluate import evaluate, stack
from digitpairs.engine.steps import GraphedStep, Step, train_epoch
from digitpairs.kernels.build import used
from digitpairs.model import KConv2d, PairNet, create_model, own_path
from digitpairs.model.pairnet import net_path
from digitpairs.model.weights import to_bytes
from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config, what_it_trains
from digitpairs.spec.provenance import code_version
from digitpairs.spec.records import RunResult
from digitpairs.spec.registry import arch_config, get_arch, own_hashes
from digitpairs.spec.shapes import first_map_bytes

GROUP_BYTES = 12e6  # on the CPU, a group's largest activation at most this (where rounds allow): it stays in cache
GPU_GROUP = 10  # on a GPU, rounds per batched model: a whole unit of the default --batch-rounds


def group_rounds(arch: Arch | str, cfg: Config, device: str | torch.device | None = None) -> int:
    """Rounds per group for this architecture and config on this device: at least 2 and within the cache budget on
    the CPU; 1 for a network of yours that runs one round at a time (model.members)."""
    arch = get_arch(arch) if isinstance(arch, str) else arch
    mode, _, own_bytes = own_path(arch, arch_config(arch, cfg), device)
    if mode in ("plain", "looped"):
        return 1
    name = str(device or cfg.device)  # not resolved for "cuda": a Ray driver without a GPU plans for its cluster's
    if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()):
        return GPU_GROUP
    return max(2, int(GROUP_BYTES // (cfg.members * step_bytes(arch, cfg, own_bytes))))


def step_bytes(arch: Arch, cfg: Config, own_bytes: int) -> int:
    """One member's largest activation in a training step: the built-in branch's first map, or yours."""
    if arch.branch is None:
        return first_map_bytes(cfg)
    return max(1, own_bytes // (2 if cfg.precision == "bf16" else 1))


def own_code(arch: Arch) -> list[str | None]:
    """The hashes of the source files of an architecture's networks of yours (spec.plugins.code_hash), as its
    registration took them where this process has no file of them (a Ray task)."""
    here = own_hashes(arch)
    return list(arch.code) if arch.code and None in here else here


def chunks(n: int, size: int) -> list[int]:
    """Sizes of consecutive groups of at most `size` rounds covering n rounds."""
    return [min(size, n - i) for i in range(0, n, size)]


def train(arch: Arch | str, cfg: Config, datas: Iterable[PairData], rounds: list[int], seeds: list[int],
          on_epoch=None, channels_last: bool = True, threads: int | None = None, groups: list[int] | None = None,
          device: str | torch.device | None = None, checkpoints: Checkpoints | None = None) -> list[RunResult]:
    """Train every round's members (one, or an ensemble of cfg.members); return one RunResult per round.

    datas yields each round's PairData (a generator keeps memory low). groups: sizes of the consecutive groups the
    rounds train in, each one batched model (default: chunks of group_rounds). on_epoch(n) is called whenever n
    rounds have finished an epoch. threads: torch threads to use on the CPU (default: torch.get_num_threads()), one
    per group trained at the same time. device: overrides cfg.device. checkpoints: where each group saves its state
    as it trains and resumes from (checkpoint.py)."""
    start = time.perf_counter()
    arch = get_arch(arch) if isinstance(arch, str) else arch
    cfg = arch_config(arch, cfg)  # a registered architecture's own settings (epochs, augmentation, ...)
    dev = devices.check(device or cfg.device, cfg.cuda_graphs)
    groups = groups or chunks(len(rounds), group_rounds(arch, cfg, dev))
    if sum(groups) != len(rounds) or min(groups) < 1:
        raise ValueError(f"groups {groups} do not cover the {len(rounds)} rounds")
    ends = list(itertools.accumulate(groups, initial=0))
    jobs = [(rounds[a:b], seeds[a:b]) for a, b in itertools.pairwise(ends)]
    before = torch.get_num_threads()
    threads = 1 if dev.type == "cuda" else max(1, min(threads or before, len(jobs)))
    datas, lock, stop = iter(datas), threading.Lock(), threading.Event()
    todo = iter(enumerate(jobs))

    def tick(n):
        with lock:
            on_epoch(n)

    def work() -> dict[int, list[RunResult]]:
        """Take groups in order until none is left. A group's rounds are stacked only when a thread takes it, so
        only the groups in training are in memory."""
        if dev.type == "cpu":  # one torch thread per group, always: a group's numbers then do not depend on
            torch.set_num_threads(1)  # how many threads or groups the unit had (BatchNorm's sums do otherwise)
        out = {}
        while True:
            with lock:
                i, (rs, ss) = next(todo, (None, (None, None)))
                if i is None:
                    return out
                data = stack(itertools.islice(datas, len(rs)), len(rs), dev)
            out[i] = train_group(arch, cfg, data, rs, ss, on_epoch and tick, channels_last, stop, checkpoints)

    try:
        done = work() if threads == 1 else on_threads(work, threads, stop)
    finally:
        torch.set_num_threads(before)
    results = [r for i in sorted(done) for r in done[i]]
    wall = (time.perf_counter() - start) / len(rounds)
    for r in results:
        r.wall_s, r.device, r.kernels = wall, devices.name(dev), used(dev)
    return results


def on_threads(work, threads: int, stop: threading.Event) -> dict[int, list[RunResult]]:
    """work() on `threads` Python threads at once, their results merged. The first failure (or an interrupt) ends
    the call as soon as it happens; the other threads stop at their next step."""
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(work) for _ in range(threads)]
        try:
            for f in as_completed(futures):
                f.result()
        except BaseException:
            stop.set()
            raise
    return {i: rs for f in futures for i, rs in f.result().items()}


def optimizer(net: PairNet, cfg: Config, device: torch.device) -> torch.optim.Adam:
    """Adam in its fused form (one operator for every parameter's update) on a GPU, and on the CPU for a network
    with parts of yours (measured on the residual example one round at a time: docs/benchmarks.md); the built-in
    family on the CPU keeps its foreach form, so that its numbers stay those of the per-parameter loop to the last
    bit (fused was no faster for it)."""
    fused = device.type == "cuda" or net.arch.own
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=fused or None, foreach=not fused or None)


def build(arch: Arch, cfg: Config, seeds: list[int], dev: torch.device, channels_last: bool, total_steps: int):
    """A group's batched model on the device, its optimizer and its learning-rate schedule (or None). Member j of
    the round with seed s takes its initialisation and random stream from (s, 1 + 100 j) and (s, 2 + 100 j), so
    member 0 is the single model of that round."""
    m = cfg.members
    inits = [sub_seed(s, 1 + 100 * j) for s in seeds for j in range(m)]
    streams = [sub_seed(s, 2 + 100 * j) for s in seeds for j in range(m)]
    net = create_model(arch, cfg, len(seeds) * m).seed(inits, streams).to(dev)
    for branch in net.branches:
        branch.channels_last = channels_last
    for conv in (module for module in net.modules() if isinstance(module, KConv2d)):
        conv.unfold = cfg.matmul_conv
    opt = optimizer(net, cfg, dev)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=total_steps)
             if cfg.schedule == "onecycle" else None)
    return net, opt, sched


def train_group(arch: Arch, cfg: Config, data: dict, rounds: list[int], seeds: list[int], on_epoch,
                channels_last: bool, stop: threading.Event | None = None,
                checkpoints: Checkpoints | None = None) -> list[RunResult]:
    """One group: its rounds' members trained at once as one batched model; data as made by stack(). With
    checkpoints, it resumes from its last saved epoch and saves as it goes."""
    k, m, dev = len(rounds), cfg.members, data["train_x"].device
    steps_per_epoch = -(-data["train_x"].shape[1] // cfg.batch_size)
    net, opt, sched = build(arch, cfg, seeds, dev, channels_last, cfg.epochs * steps_per_epoch)
    # on the CPU, evaluation batches within the cache budget too (at 28x28, 3 rounds: 100 pairs, not 250)
    per_member = step_bytes(arch, cfg, net_path(net, cfg, dev)[2] if arch.own else 0)
    eval_batch = None if dev.type == "cuda" else max(10, int(GROUP_BYTES * cfg.batch_size // (k * m * per_member)))
    key = {"arch": arch.to_dict(), "rounds": rounds, "seeds": seeds, "code": code_version()["code_hash"],
           "config": what_it_trains(cfg.to_dict())} | ({"yours": own_code(arch)} if arch.own else {})
    done, curves = checkpoints.load(rounds, key, net, opt, sched) if checkpoints else (0, [[] for _ in range(k)])
    if done and on_epoch is not None:
        on_epoch(k * done)
    final = {}  # the last epoch's answer on every test pair (answers.py)
    # a CUDA graph replays fixed work: a network of yours that reseeds torch's generator, or is not batched, steps
    # eagerly (model/members.py)
    graphs = cfg.cuda_graphs and all(p.info.mode == "batched" and not p.info.random for p in net.own_parts())
    step = (GraphedStep if graphs else Step)(net, opt, sched, cfg, data)
    for epoch in range(done + 1, cfg.epochs + 1):
        sum_obj, sum_cmp = train_epoch(step, cfg, data, stop)
        if not torch.isfinite(sum_obj).all():
            bad = [rounds[i] for i in range(k) if not torch.isfinite(sum_obj[i])]
            raise UserError(f"{arch.name} diverged (non-finite loss) in round(s) {bad} at epoch {epoch}: "
                            f"lower --lr (now {cfg.lr}) or use --precision fp32 (now {cfg.precision})")
        tta = cfg.tta if epoch == cfg.epochs else 1  # test-time views for the final numbers only: they cost
        n_test, n_val = data["test_x"].shape[1], data["val_x"].shape[1]
        acc = evaluate(net, data["test_x"], data["test_classes"], cfg.precision, m, tta, eval_batch,
                       final if epoch == cfg.epochs else None).tolist()
        val = (evaluate(net, data["val_x"], data["val_classes"], cfg.precision, m, tta, eval_batch).tolist()
               if n_val else None)
        for i, (obj, cmp) in enumerate(zip((sum_obj / steps_per_epoch).tolist(),
                                           (sum_cmp / steps_per_epoch).tolist())):
            curves[i].append({"epoch": epoch, "train_cmp": cmp, "train_loss": obj, "test_correct": acc[i],
                              "val_acc": None if val is None else val[i] / n_val, "test_acc": acc[i] / n_test})
        if checkpoints:
            checkpoints.save(rounds, key, epoch, net, opt, sched, curves)
        if on_epoch is not None:
            on_epoch(k)
    if not final:  # resumed from the last epoch's checkpoint: its answers again (in eval mode, the same)
        evaluate(net, data["test_x"], data["test_classes"], cfg.precision, m, cfg.tta, eval_batch, final)
    # wall_s and device: set by train() for the whole call
    return [RunResult(r, s, c[-1]["test_acc"], c[-1]["val_acc"], net.num_params(), 0.0, k, c,
                      c[-1]["test_correct"], data["test_x"].shape[1], norm=norm, weights=to_bytes(state), answers=a)
            for r, s, c, norm, state, a in zip(rounds, seeds, curves, data["norm"], net.member_states(m),
                                                per_round(final, data))]
