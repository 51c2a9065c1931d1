"""The results store: one SQLite file, written in short transactions (WAL), read by every report.

Every run is one row, inserted once with its curves in the same transaction and never edited: an interrupted
study loses at most the runs in progress, and the same command again skips what is done. Several processes may
share one store: creating it, recording a study and claiming work (store/leases.py) each take the write lock
for one short transaction (BEGIN IMMEDIATE), so that no two of them see the same state and act on it.
"""

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from digitpairs.base.errors import UserError, reason
from digitpairs.base.procfs import TOKEN
from digitpairs.spec.provenance import code_version
from digitpairs.spec.records import RunResult
from digitpairs.store import answers, schema, weights
from digitpairs.store.specs import growth_differences, merged

RUN_COLUMNS = ("study", "arch", "round", "seed", "config", "test_acc", "val_acc", "n_params", "wall_s", "batch",
               "torch_version", "package_version", *schema.RUN_COLUMNS, "kernels")


def files(path: Path) -> list[Path]:
    """The files of the store at path, resolved: the database and SQLite's write-ahead log and shared memory."""
    path = Path(path).resolve()
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


class Store:
    def __init__(self, path: Path, create: bool = True, timeout: float = 30.0):
        """Open (create=True: or create) the store; timeout: seconds to wait for another process's write lock."""
        self.path, self.timeout = Path(path), timeout
        if not self.path.exists() and not create:
            raise UserError(f"no store at {self.path}: run a study first or pass --store")
        if not self.path.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create the store's folder {self.path.parent} ({reason(e)}): "
                                "pass --store with a writable path") from None
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)  # explicit transactions
        except sqlite3.Error as e:
            raise UserError(f"cannot open the store {self.path} ({e}): pass --store with a writable path") from None
        try:
            self._open(create)
        except UserError:  # a store of a newer schema
            self.db.close()
            raise
        except sqlite3.OperationalError as e:  # before DatabaseError, its base class
            self.db.close()
            if _busy(e):
                raise self.busy() from None
            raise UserError(f"cannot open the store {self.path} ({e}): the store and its folder must be writable "
                            "(SQLite keeps its -wal and -shm files beside it): pass --store with a writable path, or "
                            "copy the store to one") from None
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise UserError(f"{self.path} is not a digitpairs store ({e}): pass another --store; "
                            "the file was left untouched") from None

    def _open(self, create: bool) -> None:
        """Check the format marker and the schema version; a writer (create=True) then creates the tables in an
        empty file or migrates an older store (store/schema.py). One transaction: of several processes creating one
        store at once, one creates the tables and the others find them."""
        if not create:  # a reader (report, export): no write, no lock taken
            if self._format() != schema.FORMAT:
                raise sqlite3.DatabaseError("no digitpairs format marker")
            self._check_version()
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            empty = not self.db.execute("SELECT name FROM sqlite_master").fetchall()
            if not empty:
                if self._format() != schema.FORMAT:
                    raise sqlite3.DatabaseError("no digitpairs format marker")
                self._check_version()
            schema.migrate(self.db, empty)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
        self.db.execute("PRAGMA synchronous=FULL")  # a committed run survives power loss

    def _check_version(self) -> None:
        if schema.version(self.db) > schema.VERSION:
            raise UserError(f"the store {self.path} was written by a newer digitpairs (schema version "
                            f"{schema.version(self.db)}; this one reads up to {schema.VERSION}): upgrade digitpairs, "
                            "or pass another --store")

    def _format(self):
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except sqlite3.DatabaseError as e:  # not a database, or one without our table: no marker
            if isinstance(e, sqlite3.OperationalError) and "no such table" not in str(e):
                raise  # busy, or a store that cannot be opened here (a read-only folder)
            return None
        return row[0] if row else None

    def check(self) -> None:
        """SQLite's quick check of the whole file, before hours of training that could not be stored."""
        problems = [row[0] for row in self.db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(problems[0])

    def busy(self) -> UserError:
        return UserError(f"store busy, try again: {self.path} stayed locked by another process for "
                         f"{self.timeout:g} s")

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error); a lock held elsewhere past the timeout: "store busy"."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self.busy() if _busy(e) else e from None
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError) and _busy(e):
                raise self.busy() from None
            raise

    @contextmanager
    def reading(self):
        """One read transaction: what is read inside sees the store as it was at the first read (SQLite's WAL),
        whatever other processes store meanwhile, so that a report written while a study trains is of one state.
        Inside another reading(), it is part of that one."""
        if self.db.in_transaction:
            yield self
            return
        self.db.execute("BEGIN")
        try:
            yield self
        finally:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    def close(self):
        self.db.close()

    def ensure_study(self, study: str, config: dict, write: bool = True) -> dict:
        """Record the study's spec, or check it against the stored one; return the spec as stored (write=False:
        check only, and return the spec as it would be stored).

        A study may grow: more rounds, more variants, fields newer than its spec at their defaults. What it already
        ran may not change, and it never shrinks: fewer rounds than stored are refused (the report would read the
        stored rounds as missing). A variant's group_rounds is the stored one where there is one."""
        config = json.loads(_json(config))  # as JSON reads it back: lists, not tuples
        with self.transaction():
            row = self.db.execute("SELECT config FROM studies WHERE study = ?", (study,)).fetchone()
            if row is None:
                if write:
                    self.db.execute("INSERT INTO studies (study, config) VALUES (?, ?)", (study, _json(config)))
                return config
            old = json.loads(row[0])
            diffs = growth_differences(old, config)
            left_out = [d.removeprefix("variant ").removesuffix(" is missing") for d in diffs if d.endswith(" is missing")]
            if left_out and len(left_out) == len(diffs):
                raise UserError(f"study {study!r} in {self.path} has variants this command leaves out "
                                f"({', '.join(left_out)}), and a study never shrinks: run it with all of them, or "
                                "pass --study with a new name")
            if diffs:
                more = f", and {len(diffs) - 3} more" if len(diffs) > 3 else ""
                raise UserError(f"study {study!r} in {self.path} was run with another config ({', '.join(diffs[:3])}"
                                f"{more}): pass --study with a new name, or another --store")
            if config.get("rounds", 0) < old.get("rounds", 0):
                raise UserError(f"study {study!r} in {self.path} has {old['rounds']} rounds, more than the "
                                f"{config.get('rounds')} asked, and a study never shrinks: pass --rounds "
                                f"{old['rounds']} (or more), or --study with a new name")
            new = merged(old, config)
            if write and _json(new) != row[0]:
                self.db.execute("UPDATE studies SET config = ? WHERE study = ?", (_json(new), study))
            return new

    def done(self, study: str) -> set[tuple[str, int]]:
        return set(self.db.execute("SELECT arch, round FROM runs WHERE study = ?", (study,)).fetchall())

    def add_runs(self, study: str, arch: str, config: dict, results: list[RunResult], code: dict | None = None,
                 release: tuple[int, ...] = ()) -> list[RunResult]:
        """Insert the runs with their curves, weights and answers in one transaction, and drop the claims on the
        groups that start at the rounds in `release`; a run already stored is kept as it is. code: what the process
        that trained them ran (spec.provenance.code_version(); default: this process's). Returns the runs inserted."""
        text, code = _json(config), code or code_version()
        added = []
        with self.transaction():
            for r in results:
                row = (study, arch, r.round, r.seed, text, r.test_acc, r.val_acc, r.n_params, r.wall_s, r.batch,
                       code["torch_version"], code["package_version"], r.test_correct if r.n_test else None,
                       code["code_hash"], code["git_commit"], r.device or None, r.kernels or None)
                cur = self.db.execute(f"INSERT OR IGNORE INTO runs ({', '.join(RUN_COLUMNS)}) "
                                      f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})", row)
                if cur.rowcount:
                    added.append(r)
                    self.db.executemany(
                        "INSERT INTO curves VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(study, arch, r.round, c["epoch"], c["train_cmp"], c["train_loss"], c["val_acc"],
                          c["test_acc"])
                         for c in r.curves])
            weights.save(self.db, study, arch, added)  # the trained weights (unless --no-keep-models)
            answers.save(self.db, study, arch, added)  # the last epoch's answers on the test pairs, for the report
            self.db.executemany("DELETE FROM claims WHERE study = ? AND arch = ? AND round = ? AND token IS ?",
                                [(study, arch, first, TOKEN) for first in release])
        return added

    def studies(self) -> list[str]:
        return [s for (s,) in self.db.execute("SELECT study FROM studies ORDER BY created, rowid")]

    def study_config(self, study: str) -> dict:
        row = self.db.execute("SELECT config FROM studies WHERE study = ?", (study,)).fetchone()
        if row is None:
            raise UserError(f"no study {study!r} in {self.path}: choose from {', '.join(self.studies()) or 'none'}")
        return json.loads(row[0])

    def runs(self, study: str) -> list[dict]:
        """Every run of the study as a dict of its columns (None for the columns that an older store lacks)."""
        cur = self.db.execute("SELECT * FROM runs WHERE study = ? ORDER BY rowid", (study,))
        cols = [d[0] for d in cur.description]
        return [dict.fromkeys(RUN_COLUMNS) | dict(zip(cols, row)) | {"config": json.loads(row[cols.index("config")])}
                for row in cur]

    def curves(self, study: str) -> list[dict]:
        cur = self.db.execute("SELECT arch, round, epoch, train_cmp, train_loss, val_acc, test_acc FROM curves "
                              "WHERE study = ? ORDER BY arch, round, epoch", (study,))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def answers(self, study: str) -> dict[str, dict[int, dict]]:
        """{variant: {round: its answers on the test pairs, as arrays}} (store/answers.py)."""
        return answers.load(self.db, study)


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)
