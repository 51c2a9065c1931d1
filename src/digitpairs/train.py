"""One training loop and one evaluator for every architecture, over K members (rounds) at once.

Member k's loss is the mean over its own minibatch; the members' losses are summed, so each member's gradient,
Adam state (Adam is elementwise) and update are exactly those of a separate run.

The rounds of one call train in groups, each group one batched model, trained by one of `threads` Python threads
on one torch thread: the kernels of this small network scale poorly across threads (1.6x on 2 threads), independent
groups do not (1.9x), and a group small enough for its activations to stay in cache runs faster per round (at 28x28
on the development machine, 1 thread: 0.40 s per model-epoch in groups of 2-4 rounds, 0.55 in one group of 10;
a group of one round takes a slower convolution path, 0.70).
"""

import itertools
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from digitpairs import UserError
from digitpairs.config import Arch, Config
from digitpairs.models import PairNet, arch_config, create_model, first_map_bytes, get_arch
from digitpairs.pairs import PairData, augment, sub_seed, target_of, view


@dataclass
class RunResult:
    """One (architecture, round): the final test accuracy and the per-epoch curves."""
    round: int
    seed: int
    test_acc: float
    val_acc: float | None  # after the last epoch, on the held-out training pairs (None without a split)
    n_params: int
    wall_s: float  # this run's share of the wall time of the train() call (the unit) it trained in
    batch: int  # how many rounds trained together as one batched model (its group, K)
    curves: list[dict] = field(default_factory=list)  # per epoch: epoch, train_cmp, train_loss, val_acc, test_acc


def losses(arch: Arch, cfg: Config, cmp, digits, classes):
    """Per-member (K,) training objective and comparison loss L_cmp for a minibatch.

    cmp (K, B), digits (K, B, 2, 10), classes (K, B, 2)."""
    k = cmp.shape[0]
    l_cmp = F.binary_cross_entropy_with_logits(cmp, target_of(classes.reshape(-1, 2)).view(k, -1),
                                               reduction="none").mean(1)
    if not arch.aux:
        return l_cmp, l_cmp
    if cfg.aux_loss == "ce":
        l_digits = F.cross_entropy(digits.reshape(-1, 10), classes.reshape(-1), reduction="none",
                                   label_smoothing=cfg.label_smoothing).view(k, -1).mean(1)
    else:  # "l2": mean squared error between the softmax and the one-hot class
        onehot = F.one_hot(classes, 10).to(digits.dtype)
        l_digits = (digits.softmax(-1) - onehot).pow(2).reshape(k, -1).mean(1)
    if arch.head != "mlp":  # TransferLearn learns the digits only; the comparison is fixed logic
        return l_digits, l_cmp
    return l_cmp + cfg.alpha * l_digits, l_cmp


EVAL_BATCH = 250  # pairs per evaluation step by default: bounds memory, does not change results


def autocast(precision: str):
    """bf16: convolutions and matmuls in bfloat16 (native on this kind of CPU); weights and Adam stay fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.inference_mode()
def evaluate(net: PairNet, x: torch.Tensor, classes: torch.Tensor, precision: str = "fp32", members: int = 1,
             tta: int = 1, batch: int = EVAL_BATCH):
    """(K,) accuracy of each round on its own pairs; x (K, M, 2, S, S), classes (K, M, 2).

    The net holds K * members members, a round's members next to each other; each round predicts from the
    probabilities averaged over its members and over `tta` test-time views."""
    was_training = net.training
    net.eval()
    k = x.shape[0]
    owner = torch.arange(k).repeat_interleave(members)  # member -> its round
    correct = torch.zeros(k)
    for s in range(0, x.shape[1], batch):
        xs = x[owner, s:s + batch]
        p_cmp, probs = 0, 0
        for i in range(tta):
            with autocast(precision):
                cmp, digits = net(view(xs, i))
            p_cmp = p_cmp + torch.sigmoid(cmp.float())
            probs = probs + digits.float().softmax(-1)
        b = xs.shape[1]
        p_cmp, probs = p_cmp.view(k, members, b).mean(1) / tta, probs.view(k, members, b, 2, 10).mean(1) / tta
        truth = classes[:, s:s + batch]
        correct += (net.predict(p_cmp, probs) == (truth[..., 0] <= truth[..., 1])).sum(1)
    net.train(was_training)
    return correct / x.shape[1]


def stack(datas: Iterable[PairData], k: int) -> dict[str, torch.Tensor]:
    """The rounds' tensors stacked along a new first axis (K, ...), filled one round at a time: with a generator
    of rounds, only one round's own tensors are alive beside the stacked ones."""
    out = {}
    for i, d in enumerate(datas):
        for key in ("train_x", "train_classes", "test_x", "test_classes", "val_x", "val_classes"):
            t = getattr(d, key)
            if key not in out:
                out[key] = torch.empty((k, *t.shape), dtype=t.dtype)
            out[key][i] = t
    return out


GROUP_BYTES = 12e6  # a group's largest activation at most this (where rounds allow): it stays in cache


def group_sizes(n_rounds: int, threads: int, round_bytes: float) -> list[int]:
    """Sizes of the groups that n_rounds rounds train in: a multiple of `threads` groups (each thread gets as many),
    of at most GROUP_BYTES // round_bytes rounds each, and of at least 2 rounds where the threads allow."""
    most = max(2, int(GROUP_BYTES // round_bytes))
    n = min(n_rounds, threads * -(-n_rounds // (threads * most)))
    return [n_rounds // n + (g < n_rounds % n) for g in range(n)]


def train(arch: Arch | str, cfg: Config, datas: Iterable[PairData], rounds: list[int], seeds: list[int],
          on_epoch=None, channels_last: bool = True, threads: int | None = None) -> list[RunResult]:
    """Train every round's members (one, or an ensemble of cfg.members); return one RunResult per round.

    datas yields each round's PairData (a generator keeps memory low). on_epoch(n) is called whenever n rounds have
    finished an epoch. threads: torch threads to use (default: torch.get_num_threads()), one per group trained at
    the same time (module docstring). A round's numbers do not depend on the rounds beside it, so neither the
    grouping nor channels_last (NHWC convolutions and pooling are much faster on CPU) changes them."""
    start = time.perf_counter()
    arch = get_arch(arch) if isinstance(arch, str) else arch
    cfg = arch_config(arch, cfg)  # a registered architecture's own settings (epochs, augmentation, ...)
    before = torch.get_num_threads()
    threads = max(1, min(threads or before, len(rounds)))
    datas, lock, stop = iter(datas), threading.Lock(), threading.Event()
    groups = iter(enumerate(group_sizes(len(rounds), threads, cfg.members * first_map_bytes(cfg))))
    taken = 0

    def next_group():
        """The next group (index, stacked data, rounds, seeds), or None. Groups are contiguous runs of rounds, handed
        out in order, and stacked only when a thread takes one: only the groups in training are in memory."""
        nonlocal taken
        with lock:
            i, size = next(groups, (None, 0))
            if i is None:
                return None
            at, taken = taken, taken + size
            return i, stack(itertools.islice(datas, size), size), rounds[at:at + size], seeds[at:at + size]

    def locked_tick(n):
        with lock:
            on_epoch(n)

    tick = locked_tick if on_epoch is not None else None

    def work() -> dict[int, list[RunResult]]:
        if threads > 1:
            torch.set_num_threads(1)
        out = {}
        while (group := next_group()) is not None:
            i, *args = group
            out[i] = _train(arch, cfg, *args, tick, channels_last, stop)
        return out

    if threads == 1:
        done = work()
    else:
        try:
            with ThreadPoolExecutor(threads) as pool:
                futures = [pool.submit(work) for _ in range(threads)]
                try:
                    for f in as_completed(futures):
                        f.result()  # the first failure, as soon as it happens
                except BaseException:  # a group failed, or the user interrupted: the others stop at their next step
                    stop.set()
                    raise
        finally:
            torch.set_num_threads(before)
        done = {i: rs for f in futures for i, rs in f.result().items()}
    results = [r for i in sorted(done) for r in done[i]]
    wall = (time.perf_counter() - start) / len(rounds)
    for r in results:
        r.wall_s = wall
    return results


class _Stopped(Exception):
    """Another group of the same call failed: this one ends too."""


def _train(arch: Arch, cfg: Config, data: dict, rounds: list[int], seeds: list[int], on_epoch, channels_last: bool,
           stop: threading.Event | None = None) -> list[RunResult]:
    """One group: its rounds' members trained at once as one batched model; data as made by stack()."""
    k, m = len(rounds), cfg.members
    # member j of the round with seed s: initialisation and random stream from (s, 1 + 100 j) and (s, 2 + 100 j),
    # so member 0 is the single model of that round
    inits = [sub_seed(s, 1 + 100 * j) for s in seeds for j in range(m)]
    streams = [sub_seed(s, 2 + 100 * j) for s in seeds for j in range(m)]
    net = create_model(arch, cfg, k * m).seed(inits, streams)
    for branch in net.branches:
        branch.channels_last = channels_last
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    x, classes = data["train_x"], data["train_classes"]  # (K, N, 2, S, S), (K, N, 2)
    test_x, test_classes, val_x, val_classes = data["test_x"], data["test_classes"], data["val_x"], data["val_classes"]
    n = x.shape[1]
    owner = torch.arange(k).repeat_interleave(m).unsqueeze(1)  # (K*M, 1): member -> its round's data
    steps_per_epoch = -(-n // cfg.batch_size)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
             if cfg.schedule == "onecycle" else None)
    # evaluation batches within the cache budget too (at 28x28, 3 rounds: 100 pairs, 1.6x faster than 250)
    eval_batch = max(10, int(GROUP_BYTES * cfg.batch_size // (k * m * first_map_bytes(cfg))))
    curves: list[list[dict]] = [[] for _ in range(k)]
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = torch.stack([torch.randperm(n, generator=g) for g in net.rngs])  # (K*M, N): each member's own order
        sum_obj, sum_cmp, steps = torch.zeros(k * m), torch.zeros(k * m), 0
        for s in range(0, n, cfg.batch_size):
            if stop is not None and stop.is_set():
                raise _Stopped
            idx = order[:, s:s + cfg.batch_size]
            cb = classes[owner, idx]
            xb = augment(x[owner, idx], cfg, net.rngs)
            with autocast(cfg.precision):
                cmp, digits = net(xb)
            obj, l_cmp = losses(net.arch, cfg, cmp.float(), digits.float(), cb)
            opt.zero_grad(set_to_none=True)
            obj.sum().backward()
            opt.step()
            if sched is not None:
                sched.step()
            sum_obj += obj.detach()
            sum_cmp += l_cmp.detach()
            steps += 1
        # a round's training losses: the mean over its members
        sum_obj, sum_cmp = sum_obj.view(k, m).mean(1), sum_cmp.view(k, m).mean(1)
        if not torch.isfinite(sum_obj).all():
            bad = [rounds[i] for i in range(k) if not torch.isfinite(sum_obj[i])]
            raise UserError(f"{arch.name} diverged (non-finite loss) in round(s) {bad} at epoch {epoch}: "
                            f"lower --lr (now {cfg.lr}) or use --precision fp32 (now {cfg.precision})")
        tta = cfg.tta if epoch == cfg.epochs else 1  # test-time views for the final numbers only: they cost
        acc = evaluate(net, test_x, test_classes, cfg.precision, m, tta, eval_batch)
        val = evaluate(net, val_x, val_classes, cfg.precision, m, tta, eval_batch) if val_x.shape[1] else None
        for i in range(k):
            curves[i].append({"epoch": epoch, "train_cmp": (sum_cmp[i] / steps).item(),
                              "train_loss": (sum_obj[i] / steps).item(),
                              "val_acc": None if val is None else val[i].item(), "test_acc": acc[i].item()})
        if on_epoch is not None:
            on_epoch(k)
    # wall_s: set by train() to the run's share of the whole call
    return [RunResult(r, s, curves[i][-1]["test_acc"], curves[i][-1]["val_acc"], net.num_params(), 0.0, k, curves[i])
            for i, (r, s) in enumerate(zip(rounds, seeds))]
