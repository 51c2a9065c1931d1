"""Every table of the store, and how a store of any earlier version is brought to this one.

The store records its schema version in `meta` (key "schema"). Opening a store to write applies, in one
transaction, each migration above its version in order, then records the new version. Stores written by 0.1 and
0.2 have no version (0): their tables are those of some prefix of the migrations, so every migration is written to
be applied to a store that may already have what it adds (CREATE TABLE IF NOT EXISTS, a column added only where it
is missing). A store of a newer version than this code knows is refused, never changed. A reader (report, predict,
export) changes nothing: it reads an older store as it is, a table or column that is not there reading as empty.
"""

import sqlite3

FORMAT = "digitpairs-store-1"  # the marker in meta that says "this file is a digitpairs store"

BASE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study TEXT PRIMARY KEY,
    config TEXT NOT NULL,            -- the study's spec as JSON: its rounds, its variants, their resolved configs
    --                                  and rounds per group (group_rounds, fixed when the variant is first stored)
    created TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS runs (
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
CREATE TABLE IF NOT EXISTS curves (
    study TEXT NOT NULL, arch TEXT NOT NULL, round INTEGER NOT NULL, epoch INTEGER NOT NULL,
    train_cmp REAL NOT NULL,         -- training L_cmp, without the auxiliary term
    train_loss REAL NOT NULL,        -- the training objective
    val_acc REAL,
    test_acc REAL NOT NULL,
    PRIMARY KEY (study, arch, round, epoch),
    FOREIGN KEY (study, arch, round) REFERENCES runs(study, arch, round)
);
CREATE TABLE IF NOT EXISTS claims (  -- leases: the groups of rounds a process is training now (store/leases.py)
    study TEXT NOT NULL, arch TEXT NOT NULL,
    round INTEGER NOT NULL,          -- the group's first round
    host TEXT NOT NULL, pid INTEGER NOT NULL,
    started REAL NOT NULL,           -- Unix time
    heartbeat REAL NOT NULL,         -- Unix time, renewed while the process lives
    PRIMARY KEY (study, arch, round)
)
"""
RUN_COLUMNS = {  # columns added to runs after the first stores: NULL in the rows of older code
    "test_correct": "INTEGER",  # test pairs answered correctly (test_acc = test_correct / n_test)
    "code_hash": "TEXT",  # the hash of the code that decides the numbers (spec/provenance.py), first 12 hex
    "git_commit": "TEXT",  # the checkout's commit, NULL outside a git checkout
    "device": "TEXT",  # the CPU's model name or the GPU's name
}
MODELS = """CREATE TABLE IF NOT EXISTS models (  -- every run's trained weights (store/weights.py)
    study TEXT NOT NULL, arch TEXT NOT NULL, round INTEGER NOT NULL,
    weights BLOB NOT NULL,           -- torch.save of the PairNet's state dict (k = members), read with weights_only
    norm_mean REAL NOT NULL,         -- the training pairs' mean and SD the images were normalised with
    norm_std REAL NOT NULL,
    PRIMARY KEY (study, arch, round),
    FOREIGN KEY (study, arch, round) REFERENCES runs(study, arch, round)
)"""
ANSWERS = """CREATE TABLE IF NOT EXISTS answers (  -- every run's answers on its test pairs (store/answers.py)
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


def _base(db: sqlite3.Connection) -> None:
    for statement in BASE.split(";"):
        db.execute(statement)


def _columns(table: str, columns: dict[str, str]):
    """A migration that adds these columns to the table where they are missing."""
    def add(db: sqlite3.Connection) -> None:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, kind in columns.items():
            if column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    return add


CLAIM_COLUMNS = {  # a claim's process, told apart from a later one with the same pid (store/leases.py)
    "proc_start": "TEXT",  # the process's start time on its host (NULL: not known, or a claim of 0.2)
    "token": "TEXT",  # random, the process's own: it renews and releases its claims by it
}
MIGRATIONS = [  # migration i (from 1) brings a store to schema version i
    _base,  # 0.1.0: studies, runs, curves, and the claims of processes sharing a study
    _columns("runs", RUN_COLUMNS),  # 0.1.x: a run's count of correct test pairs, its code hash, commit and device
    lambda db: db.execute(MODELS),  # 0.2.0: the trained weights
    lambda db: db.execute(ANSWERS),  # 0.2.0: the answers on the test pairs
    _columns("claims", CLAIM_COLUMNS),  # 0.3.0: claims owned by a process's token, not by its pid
    _columns("runs", {"kernels": "TEXT"}),  # 0.3.0: which operators trained the run (NULL: not recorded)
]
VERSION = len(MIGRATIONS)


def version(db: sqlite3.Connection) -> int:
    """The schema version a store records (0: written before versions were recorded)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection, empty: bool) -> None:
    """Bring the store to VERSION, inside the caller's transaction (the format marker written into an empty one)."""
    start = 0 if empty else version(db)
    for step in MIGRATIONS[start:]:
        step(db)
    if empty:
        db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
    if start < VERSION:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(VERSION),))


def has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None
