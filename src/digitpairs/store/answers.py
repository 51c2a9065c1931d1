"""What every run answered on its test pairs, kept in the store's `answers` table so that a report can explain a
variant's accuracy from the store alone: the digits its branch read, P(first <= second), its answer, and the
pixels of its first wrong pairs.

Recorded by the last epoch's evaluation (engine/evaluate.py, with the run's members and test-time views), written
in the transaction that inserts the run (Store.add_runs calls `save`); the table is defined in store/schema.py. Arrays are stored as raw bytes of a fixed dtype
and read back with numpy.frombuffer: no code is unpickled. A store written before answers were kept has no such
table and reads as before (`load` gives nothing).
"""

import sqlite3

import numpy as np

from digitpairs.spec.records import ANSWER_COLUMNS as COLUMNS
from digitpairs.spec.records import ANSWER_DTYPES as DTYPES
from digitpairs.store.schema import has_table


def save(db: sqlite3.Connection, study: str, arch: str, results) -> int:
    """Insert the answers of the runs (spec.records.RunResult) that carry them, in the caller's open transaction;
    answers already stored are kept as they are. Returns the number of rows inserted."""
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
    if not has_table(db, "answers"):
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
