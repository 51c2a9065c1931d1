"""The results store: one SQLite file, written in transactions (WAL), read by every report.

Every run is one row, inserted once with its curves in the same transaction and never edited: an interrupted
study loses at most the runs in progress, and the same command again skips what is done.
"""

import json
import sqlite3
from pathlib import Path

import torch

from digitpairs import UserError, __version__
from digitpairs.config import Arch, Config
from digitpairs.train import RunResult

FORMAT = "digitpairs-store-1"
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE studies (
    study TEXT PRIMARY KEY,
    config TEXT NOT NULL,            -- the study's spec as JSON: its variants and their resolved configs
    created TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE runs (
    study TEXT NOT NULL REFERENCES studies(study),
    arch TEXT NOT NULL,              -- the variant: a registered name, or name[overrides]
    round INTEGER NOT NULL,
    seed INTEGER NOT NULL,           -- the round's seed: pairs, initialisation and data order derive from it
    config TEXT NOT NULL,            -- the resolved Config and the Arch, as JSON
    test_acc REAL NOT NULL,          -- after the last epoch
    val_acc REAL,                    -- after the last epoch, on the held-out training pairs (NULL: no split)
    n_params INTEGER NOT NULL,
    wall_s REAL NOT NULL,            -- share of the wall time of the unit (engine call) it trained in
    batch INTEGER NOT NULL,          -- rounds trained together as one batched model (its group)
    torch_version TEXT NOT NULL,
    package_version TEXT NOT NULL,
    finished TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (study, arch, round)
);
CREATE TABLE curves (
    study TEXT NOT NULL, arch TEXT NOT NULL, round INTEGER NOT NULL, epoch INTEGER NOT NULL,
    train_cmp REAL NOT NULL,         -- training L_cmp, without the auxiliary term
    train_loss REAL NOT NULL,        -- the training objective
    val_acc REAL,
    test_acc REAL NOT NULL,
    PRIMARY KEY (study, arch, round, epoch),
    FOREIGN KEY (study, arch, round) REFERENCES runs(study, arch, round)
);
"""


def differences(old, new, path: str = "") -> list[str]:
    """Where two JSON values differ: ["variants.siamese_ws.config.epochs 25 -> 5", ...]."""
    if isinstance(old, list) and isinstance(new, list) and all(isinstance(x, dict) and "name" in x for x in old + new):
        old, new = {x["name"]: x for x in old}, {x["name"]: x for x in new}  # variants, by name
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k), new.get(k), f"{path}{k}.")]
    return [] if old == new else [f"{path.rstrip('.')} {old} -> {new}"]


def growth_differences(old: dict, new: dict) -> list[str]:
    """Where a new study spec differs from the stored one, growth aside: more rounds, more variants, and Config or
    Arch fields newer than the stored spec (filled in with their defaults, which reproduce the old behaviour)."""
    defaults = {"config": json.loads(json.dumps(Config().to_dict())),
                "arch": json.loads(json.dumps(Arch("", "").to_dict()))}

    def filled(v: dict) -> dict:
        return v | {key: d | v[key] for key, d in defaults.items() if isinstance(v.get(key), dict)}

    new_variants = {v["name"]: v for v in new.get("variants", [])}
    diffs = differences({k: x for k, x in old.items() if k not in ("rounds", "variants")},
                        {k: x for k, x in new.items() if k not in ("rounds", "variants")})
    for v in old.get("variants", []):
        if v["name"] not in new_variants:
            diffs.append(f"variant {v['name']} is missing")
        else:
            diffs += differences(filled(v), filled(new_variants[v["name"]]), f"variants.{v['name']}.")
    return diffs


class Store:
    def __init__(self, path: Path, create: bool = True):
        self.path = Path(path)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if fresh and not create:
            raise UserError(f"no store at {self.path}: run a study first or pass --store")
        if fresh:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create the store's folder {self.path.parent} ({e.strerror}): "
                                "pass --store with a writable path") from None
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # explicit transactions
            if fresh:
                self.db.executescript(f"BEGIN; {SCHEMA} INSERT INTO meta VALUES ('format', '{FORMAT}'); COMMIT;")
            elif self._format() != FORMAT:
                raise sqlite3.DatabaseError("no digitpairs format marker")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a committed run survives power loss
        except sqlite3.OperationalError as e:  # before DatabaseError, its base class
            raise UserError(f"cannot open the store {self.path} ({e}): pass --store with a writable path") from None
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path} is not a digitpairs store ({e}): pass another --store; "
                            "the file was left untouched") from None

    def _format(self):
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except sqlite3.DatabaseError:
            return None
        return row[0] if row else None

    def close(self):
        self.db.close()

    def ensure_study(self, study: str, config: dict) -> None:
        """Record the study's config, or check that it matches the one recorded (a study has one config).

        A study may grow: more rounds, more variants. What it already ran may not change."""
        text = json.dumps(config, sort_keys=True)
        row = self.db.execute("SELECT config FROM studies WHERE study = ?", (study,)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO studies (study, config) VALUES (?, ?)", (study, text))
            return
        diffs = growth_differences(json.loads(row[0]), json.loads(text))
        if not diffs:
            if row[0] != text:
                self.db.execute("UPDATE studies SET config = ? WHERE study = ?", (text, study))
        else:
            diff = ", ".join(diffs[:3])
            raise UserError(f"study {study!r} in {self.path} was run with another config ({diff}): "
                            "pass --study with a new name, or another --store")

    def done(self, study: str) -> set[tuple[str, int]]:
        return set(self.db.execute("SELECT arch, round FROM runs WHERE study = ?", (study,)).fetchall())

    def add_runs(self, study: str, arch: str, config: dict, results: list[RunResult]) -> None:
        """Insert the runs and their curves in one transaction; a run already stored is kept as it is."""
        text = json.dumps(config, sort_keys=True)
        with self.db:  # commit, or roll back on any error
            self.db.execute("BEGIN IMMEDIATE")
            for r in results:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO runs (study, arch, round, seed, config, test_acc, val_acc, n_params, wall_s,"
                    " batch, torch_version, package_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (study, arch, r.round, r.seed, text, r.test_acc, r.val_acc, r.n_params, r.wall_s, r.batch,
                     torch.__version__, __version__))
                if cur.rowcount:
                    self.db.executemany(
                        "INSERT INTO curves VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(study, arch, r.round, c["epoch"], c["train_cmp"], c["train_loss"], c["val_acc"],
                          c["test_acc"])
                         for c in r.curves])

    def studies(self) -> list[str]:
        return [s for (s,) in self.db.execute("SELECT study FROM studies ORDER BY created, rowid")]

    def study_config(self, study: str) -> dict:
        row = self.db.execute("SELECT config FROM studies WHERE study = ?", (study,)).fetchone()
        if row is None:
            raise UserError(f"no study {study!r} in {self.path}: choose from {', '.join(self.studies()) or 'none'}")
        return json.loads(row[0])

    def runs(self, study: str) -> list[dict]:
        cur = self.db.execute("SELECT * FROM runs WHERE study = ? ORDER BY rowid", (study,))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) | {"config": json.loads(row[cols.index("config")])} for row in cur]

    def curves(self, study: str) -> list[dict]:
        cur = self.db.execute("SELECT arch, round, epoch, train_cmp, train_loss, val_acc, test_acc FROM curves "
                              "WHERE study = ? ORDER BY arch, round, epoch", (study,))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]
