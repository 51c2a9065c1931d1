"""Every trained model kept: the final weights of each run in the store's `models` table (store/schema.py).

A run's weights are the state dict of the PairNet it trained (k = its Config's `members`), as bytes that
model/weights.py writes with torch.save and reads back with torch.load(weights_only=True): tensors only, no code is
unpickled. They are written in the transaction that inserts the run (Store.add_runs calls `save`), so a run and its
model are stored together or not at all. A store written before models were kept has no such table: it reads as
before, and asking it for a model says so in one line. predict/kept.py rebuilds a kept model (load_model).
"""

import sqlite3

from digitpairs.base.errors import UserError
from digitpairs.store.schema import has_table as _has


def save(db: sqlite3.Connection, study: str, arch: str, results) -> int:
    """Insert the weights of the runs (spec.records.RunResult) that carry them, in the caller's open transaction; a
    model already stored is kept as it is, and runs without weights (None: --no-keep-models) are skipped. Returns
    the number of models inserted."""
    rows = [(study, arch, r.round, r.weights, r.norm[0], r.norm[1]) for r in results if r.weights is not None]
    before = db.total_changes
    db.executemany("INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?, ?, ?)", rows)
    return db.total_changes - before


def has_table(db: sqlite3.Connection) -> bool:
    return _has(db, "models")


def kept(store, study: str) -> dict[str, list[int]]:
    """The variants of the study with kept models, each with its kept rounds (empty in a store without models)."""
    if not has_table(store.db):
        return {}
    out: dict[str, list[int]] = {}
    for arch, r in store.db.execute("SELECT arch, round FROM models WHERE study = ? ORDER BY arch, round", (study,)):
        out.setdefault(arch, []).append(r)
    return out


def no_model(store, study: str) -> UserError:
    if not has_table(store.db):
        return UserError(f"no kept model in {store.path}: it was written before models were kept; run a study with "
                         "this version (models are kept unless --no-keep-models)")
    return UserError(f"no kept model of study {study!r} in {store.path} (it ran with --no-keep-models): run it "
                     "again into a new --store to keep its models")


def stored(db: sqlite3.Connection, study: str, arch: str, round: int) -> tuple | None:
    """(run config JSON, weights blob, norm mean, norm SD) of a kept model, or None."""
    return db.execute("SELECT r.config, m.weights, m.norm_mean, m.norm_std FROM models m JOIN runs r "
                      "USING (study, arch, round) WHERE study = ? AND arch = ? AND round = ?",
                      (study, arch, round)).fetchone()
