"""The engine's evaluation: how many test (or validation) pairs each round answers correctly, and, after the last
epoch, every pair's answer; and the rounds' data stacked for a group."""

from collections.abc import Iterable

import torch

from digitpairs.data.pairs import PairData
from digitpairs.model import PairNet, average


@torch.inference_mode()
def evaluate(net: PairNet, x: torch.Tensor, classes: torch.Tensor, precision: str = "fp32", members: int = 1,
             tta: int = 1, batch: int | None = None, answers: dict | None = None) -> torch.Tensor:
    """(K,) int64 count of the pairs each round answers correctly; x (K, M, 2, S, S), classes (K, M, 2), on the
    net's device. batch: pairs per step (default all: it bounds memory only). answers: a dict that receives, per
    step, each pair's answer, the digits read and P(first <= second) (engine/answers.py joins them).

    The net holds K * members members, a round's members next to each other; each round predicts from the
    probabilities averaged over its members and over `tta` test-time views."""
    was_training = net.training
    net.eval()
    k, batch = x.shape[0], batch or x.shape[1]
    owner = torch.arange(k, device=x.device).repeat_interleave(members)  # member -> its round
    correct = torch.zeros(k, dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[1], batch):
        p_cmp, probs = average(net, x[owner, s:s + batch], members, tta, precision)
        truth = classes[:, s:s + batch]
        answer = net.predict(p_cmp, probs)
        correct += (answer == (truth[..., 0] <= truth[..., 1])).sum(1)
        if answers is not None:  # (K, b), (K, b, 2), (K, b): P(a <= b) is the mlp head's, or the digits'
            p_le = p_cmp if net.arch.learned_head else net.p_le(probs)
            for key, t in (("answer", answer), ("read", probs.argmax(-1)), ("p_le", p_le)):
                answers.setdefault(key, []).append(t.cpu())
    net.train(was_training)
    return correct


def stack(datas: Iterable[PairData], k: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The rounds' tensors stacked along a new first axis (K, ...) on the device, filled one round at a time: with a
    generator of rounds, only one round's own tensors are alive beside the stacked ones."""
    out = {"norm": [], "test_idx": []}
    for i, d in enumerate(datas):
        out["norm"].append((d.mean, d.std))
        out["test_idx"].append(d.test_idx)
        for key in ("train_x", "train_classes", "test_x", "test_classes", "val_x", "val_classes"):
            t = getattr(d, key)
            if key not in out:
                out[key] = torch.empty((k, *t.shape), dtype=t.dtype, device=device)
            out[key][i] = t
    return out
