"""What the runs' answers on their test pairs say (the store's `answers` table, as arrays): the branch's digit
accuracy, by digit, and the comparison's accuracy by (first digit, second digit)."""

import numpy as np


def digit_accuracy(run: dict) -> float:
    """The share of the run's 2M test images whose digit the branch reads right."""
    return float((run["read"] == run["classes"]).mean())


def digits_read(runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(10,) images whose digit the branch reads right and (10,) images, by true digit, over the runs."""
    right, total = np.zeros(10, np.int64), np.zeros(10, np.int64)
    for run in runs:
        np.add.at(total, run["classes"].ravel(), 1)
        np.add.at(right, run["classes"].ravel(), (run["read"] == run["classes"]).ravel())
    return right, total


def grid(runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(10, 10) correct answers and (10, 10) pairs by (first digit, second digit), over the runs."""
    right, total = np.zeros((10, 10), np.int64), np.zeros((10, 10), np.int64)
    for run in runs:
        a, b = run["classes"][:, 0], run["classes"][:, 1]
        np.add.at(total, (a, b), 1)
        np.add.at(right, (a, b), run["correct"])
    return right, total
