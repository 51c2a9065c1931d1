"""What a trained run gives back (RunResult), the same whether it trained here, in a worker process or on a Ray
node, and what the store keeps of it. No torch: the weights travel as the bytes the store keeps."""

from dataclasses import dataclass, field

import numpy as np

# every test pair's answer after the last epoch, as arrays of fixed dtypes (the store's `answers` table)
ANSWER_DTYPES = {"classes": np.uint8, "read": np.uint8, "p_le": np.float32, "answer": np.uint8,
                 "test_idx": np.uint16, "wrong": np.uint8, "wrong_at": np.uint16}
ANSWER_COLUMNS = ("classes", "read", "p_le", "answer", "test_idx", "side", "wrong", "wrong_at")
MAX_WRONG = 16  # wrong pairs whose pixels a run keeps (the gallery shows some): 16 x 2 x 28 x 28 bytes, 25 kB


@dataclass
class RunResult:
    """One (architecture, round): the final test accuracy and the per-epoch curves."""
    round: int
    seed: int
    test_acc: float  # test_correct / n_test
    val_acc: float | None  # after the last epoch, on the held-out training pairs (None without a split)
    n_params: int
    wall_s: float  # this run's share of the wall time of the train() call (the unit) it trained in
    batch: int  # how many rounds trained together as one batched model (its group, K)
    curves: list[dict] = field(default_factory=list)  # per epoch: epoch, train_cmp, train_loss, val_acc, test_acc
    test_correct: int = 0  # test pairs answered correctly after the last epoch
    n_test: int = 0
    device: str = ""  # the CPU's model name or the GPU's name
    kernels: str = ""  # which operators trained it: "compiled kernels" or "PyTorch's operators" (kernels/build.py)
    norm: tuple[float, float] | None = None  # the training pairs' (mean, SD) the images were normalised with
    weights: bytes | None = field(default=None, repr=False)  # the trained PairNet's state dict (k = members), as
    #                                                            model.weights.to_bytes writes it; None: not kept
    answers: dict | None = field(default=None, repr=False)  # every test pair's answer (ANSWER_COLUMNS: arrays)
