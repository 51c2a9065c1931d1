"""Each round's answers on its test pairs after the last epoch, as the arrays the store keeps (spec/records.py:
ANSWER_COLUMNS), from what the evaluation collected."""

import numpy as np
import torch

from digitpairs.spec.records import MAX_WRONG


def per_round(found: dict, data: dict) -> list[dict]:
    """Each round's answers as numpy arrays (spec.records.ANSWER_COLUMNS), from what engine.evaluate put into `found` (lists
    of (K, b, ...) steps) and the group's data as engine.evaluate.stack made it."""
    answer, read, p_le = (torch.cat(found[key], dim=1).numpy() for key in ("answer", "read", "p_le"))
    classes = data["test_classes"].cpu().numpy()  # (K, M, 2)
    out = []
    for i in range(len(answer)):
        wrong_at = np.flatnonzero(answer[i] != (classes[i, :, 0] <= classes[i, :, 1]))[:MAX_WRONG]
        mean, std = data["norm"][i]
        pixels = data["test_x"][i, torch.from_numpy(wrong_at).to(data["test_x"].device)].float().cpu() * std + mean
        idx = data["test_idx"][i]
        out.append({"classes": classes[i], "read": read[i], "p_le": p_le[i], "answer": answer[i],
                    "test_idx": None if idx is None else np.asarray(idx), "side": data["test_x"].shape[-1],
                    "wrong": pixels.round().clamp(0, 255).numpy(), "wrong_at": wrong_at})
    return out
