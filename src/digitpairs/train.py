"""One training loop and one evaluator for every architecture, over K members (rounds) at once.

Member k's loss is the mean over its own minibatch; the members' losses are summed, so each member's gradient,
Adam state (Adam is elementwise) and update are exactly those of a separate run.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from digitpairs import UserError
from digitpairs.config import Arch, Config
from digitpairs.models import PairNet, arch_config, create_model, get_arch
from digitpairs.pairs import PairData, augment, sub_seed, target_of, view


@dataclass
class RunResult:
    """One (architecture, round): the final test accuracy and the per-epoch curves."""
    round: int
    seed: int
    test_acc: float
    val_acc: float | None  # after the last epoch, on the held-out training pairs (None without a split)
    n_params: int
    wall_s: float  # this run's share of the wall time of the batch it trained in
    batch: int  # how many rounds trained together (K)
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


EVAL_BATCH = 250  # test pairs per evaluation step: bounds memory, does not change results


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


def train(arch: Arch | str, cfg: Config, datas: Iterable[PairData], rounds: list[int], seeds: list[int],
          on_epoch=None, channels_last: bool = True) -> list[RunResult]:
    """Train every round's members (one, or an ensemble of cfg.members) all at once; return one RunResult per round.

    datas yields each round's PairData (a generator keeps memory low). channels_last only changes speed (NHWC
    convolutions and pooling are much faster on CPU), not the math."""
    start = time.perf_counter()
    arch = get_arch(arch) if isinstance(arch, str) else arch
    cfg = arch_config(arch, cfg)  # a registered architecture's own settings (epochs, augmentation, ...)
    k, m = len(rounds), cfg.members
    # member j of the round with seed s: initialisation and random stream from (s, 1 + 100 j) and (s, 2 + 100 j),
    # so member 0 is the single model of that round
    inits = [sub_seed(s, 1 + 100 * j) for s in seeds for j in range(m)]
    streams = [sub_seed(s, 2 + 100 * j) for s in seeds for j in range(m)]
    net = create_model(arch, cfg, k * m).seed(inits, streams)
    for branch in net.branches:
        branch.channels_last = channels_last
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    data = stack(datas, k)
    x, classes = data["train_x"], data["train_classes"]  # (K, N, 2, S, S), (K, N, 2)
    test_x, test_classes, val_x, val_classes = data["test_x"], data["test_classes"], data["val_x"], data["val_classes"]
    n = x.shape[1]
    owner = torch.arange(k).repeat_interleave(m).unsqueeze(1)  # (K*M, 1): member -> its round's data
    steps_per_epoch = -(-n // cfg.batch_size)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
             if cfg.schedule == "onecycle" else None)
    curves: list[list[dict]] = [[] for _ in range(k)]
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = torch.stack([torch.randperm(n, generator=g) for g in net.rngs])  # (K*M, N): each member's own order
        sum_obj, sum_cmp, steps = torch.zeros(k * m), torch.zeros(k * m), 0
        for s in range(0, n, cfg.batch_size):
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
        acc = evaluate(net, test_x, test_classes, cfg.precision, m, tta)
        val = evaluate(net, val_x, val_classes, cfg.precision, m, tta) if val_x.shape[1] else None
        for i in range(k):
            curves[i].append({"epoch": epoch, "train_cmp": (sum_cmp[i] / steps).item(),
                              "train_loss": (sum_obj[i] / steps).item(),
                              "val_acc": None if val is None else val[i].item(), "test_acc": acc[i].item()})
        if on_epoch is not None:
            on_epoch(epoch)
    wall = (time.perf_counter() - start) / k
    return [RunResult(r, s, curves[i][-1]["test_acc"], curves[i][-1]["val_acc"], net.num_params(), wall, k, curves[i])
            for i, (r, s) in enumerate(zip(rounds, seeds))]
