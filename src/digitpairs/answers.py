"""What every run answered on its test pairs, kept in the store's `answers` table so that a report can explain a
variant's accuracy from the store alone: the digits its branch read, P(first <= second), its answer, and the
pixels of its first wrong pairs.

Recorded by the last epoch's evaluation (train.evaluate, with the run's members and test-time views), written in
the transaction that inserts the run (Store.add_runs calls `save`). Arrays are stored as raw bytes of a fixed dtype
and read back with numpy.frombuffer: no code is unpickled. A store written before answers were kept has no such
table and reads as before (`load` gives nothing).
"""

import sqlite3

import numpy as np
import torch

MAX_WRONG = 16  # wrong pairs whose pixels a run keeps (the gallery shows some): 16 x 2 x 28 x 28 bytes, 25 kB
TABLE = """CREATE TABLE IF NOT EXISTS answers (
    study TEXT NOT NULL, arch TEXT NOT NULL, round INTEGER NOT NULL,
    classes BLOB NOT NULL,           -- (M, 2) uint8: the true digits of the M test pairs
    read BLOB NOT NULL,              -- (M, 2) uint8: the digits the branch reads (argmax of the averaged probabilities)
    p_le BLOB NOT NULL,              -- (M,) float32: P(first <= second), the mlp head's or from the digit distributions
    answer BLOB NOT NULL,            -- (M,) uint8: 1 where the variant answers "first <= second"
    test_idx BLOB,                   -- (M, 2) uint16: the images' indices in MNIST test
    side INTEGER NOT NULL,           -- S, the side of the images the network saw
    wrong BLOB NOT NULL,             -- (W, 2, S, S) uint8: the first W <= 16 wrong pairs as the network saw them,
    --                                  before normalisation (at size 14: pooled)
    wrong_at BLOB NOT NULL,          -- (W,) uint16: their positions among the M pairs
    PRIMARY KEY (study, arch, round),
    FOREIGN KEY (study, arch, round) REFERENCES runs(study, arch, round)
)"""
COLUMNS = ("classes", "read", "p_le", "answer", "test_idx", "side", "wrong", "wrong_at")
DTYPES = {"classes": np.uint8, "read": np.uint8, "p_le": np.float32, "answer": np.uint8, "test_idx": np.uint16,
          "wrong": np.uint8, "wrong_at": np.uint16}


def per_round(found: dict, data: dict) -> list[dict]:
    """Each round's answers as numpy arrays (the columns of TABLE), from what train.evaluate put into `found` (lists
    of (K, b, ...) steps) and the group's data as train.stack made it."""
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


def save(db: sqlite3.Connection, study: str, arch: str, results) -> int:
    """Insert the answers of the runs (train.RunResult) that carry them, in the caller's open transaction; answers
    already stored are kept as they are. Returns the number of rows inserted."""
    db.execute(TABLE)
    rows = [(study, arch, r.round, *(_blob(c, r.answers[c]) for c in COLUMNS)) for r in results
            if getattr(r, "answers", None) is not None]
    before = db.total_changes
    db.executemany(f"INSERT OR IGNORE INTO answers (study, arch, round, {', '.join(COLUMNS)}) "
                   f"VALUES ({', '.join('?' * (3 + len(COLUMNS)))})", rows)
    return db.total_changes - before


def _blob(column: str, value):
    if column == "side" or value is None:
        return value
    return np.ascontiguousarray(value, dtype=DTYPES[column]).tobytes()


def load(db: sqlite3.Connection, study: str) -> dict[str, dict[int, dict]]:
    """{variant: {round: its answers as numpy arrays}} of a study; empty in a store written before answers were
    kept. A blob whose size does not fit its shape (a damaged store) is left out of its run, with the run."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'answers'").fetchone() is None:
        return {}
    out: dict[str, dict[int, dict]] = {}
    cur = db.execute(f"SELECT arch, round, {', '.join(COLUMNS)} FROM answers WHERE study = ? ORDER BY arch, round",
                     (study,))
    for arch, rnd, *values in cur:
        run = _arrays(dict(zip(COLUMNS, values)))
        if run is not None:
            out.setdefault(arch, {})[rnd] = run
    return out


def _arrays(row: dict) -> dict | None:
    """A stored row's blobs as arrays of their shapes, or None if they do not fit them."""
    try:
        run = {c: None if row[c] is None else np.frombuffer(row[c], dtype=DTYPES[c]) for c in DTYPES}
        m, s = len(run["answer"]), row["side"]
        run["classes"], run["read"] = run["classes"].reshape(m, 2), run["read"].reshape(m, 2)
        run["wrong"] = run["wrong"].reshape(-1, 2, s, s)
        if run["test_idx"] is not None:
            run["test_idx"] = run["test_idx"].reshape(m, 2)
        if len(run["p_le"]) != m or len(run["wrong_at"]) != len(run["wrong"]):
            return None
    except (ValueError, TypeError):
        return None
    return run | {"correct": run["answer"].astype(bool) == (run["classes"][:, 0] <= run["classes"][:, 1])}


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
