"""How a trained round reads pairs: its comparison and digit probabilities averaged over its members (an ensemble)
and over test-time views. The engine's evaluation, `digitpairs predict` and the bench's reference loop all average
this one way.
"""

from collections.abc import Callable

import torch

from digitpairs.data.pairs import view
from digitpairs.device import autocast


def average(forward: Callable, xs: torch.Tensor, members: int = 1, tta: int = 1, precision: str = "fp32"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, B) P(first <= second) as the comparison head gives it, and (K, B, 2, 10) digit probabilities, each the
    mean over a round's `members` and over `tta` test-time views (data.pairs.view).

    forward(x) -> (cmp (K*members, B) logits, digits (K*members, B, 2, 10) logits), as PairNet's; xs (K*members, B,
    2, S, S) on the net's device, a round's members next to each other."""
    p_cmp, probs = 0, 0
    for i in range(tta):
        with autocast(precision, xs.device):
            cmp, digits = forward(view(xs, i))
        p_cmp = p_cmp + torch.sigmoid(cmp.float())
        probs = probs + digits.float().softmax(-1)
    k, b = xs.shape[0] // members, xs.shape[1]
    return p_cmp.view(k, members, b).mean(1) / tta, probs.view(k, members, b, 2, 10).mean(1) / tta

