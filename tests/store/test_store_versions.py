"""Stores written by an earlier release: tests/store/fixtures/store-0.2.0.sqlite, made by digitpairs 0.2.0 (schema version
0: no version recorded; tests/store/fixtures/README.md says how). Every test works on a copy of it, never on the fixture."""

import csv
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from digitpairs import UserError, load_model
from digitpairs.cli.main import main
from digitpairs.report.write import write_report
from digitpairs.store import Store, schema

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.2.0.sqlite"
STUDIES = ["paper-quick-size14", "kept"]
# what 0.2.0's `digitpairs report` wrote in table.csv, its accuracy columns: arch, mean, sd, n_params, rounds
TABLES_0_2_0 = {
    "paper-quick-size14": [
        {"arch": "siamese_ws_aux", "mean": "0.4825", "sd": "0.010606601717798222", "n_params": "21239", "rounds": "2"},
        {"arch": "transfer", "mean": "0.5874999999999999", "sd": "0.031819805153394665", "n_params": "20378",
         "rounds": "2"},
    ],
    "kept": [{"arch": "transfer", "mean": "0.61", "sd": "nan", "n_params": "20378", "rounds": "1"}],
}
# the runs 0.2.0 stored: (study, arch, round, seed, test_acc, n_params, test_correct)
RUNS_0_2_0 = [
    ("paper-quick-size14", "siamese_ws_aux", 0, 0, 0.49, 21239, 98),
    ("paper-quick-size14", "siamese_ws_aux", 1, 1, 0.475, 21239, 95),
    ("paper-quick-size14", "transfer", 0, 0, 0.61, 20378, 122),
    ("paper-quick-size14", "transfer", 1, 1, 0.565, 20378, 113),
    ("kept", "transfer", 0, 0, 0.61, 20378, 122),
]


@pytest.fixture
def old_store(tmp_path) -> Path:
    """A copy of the 0.2.0 store, alone in its folder (SQLite's -wal and -shm files appear beside it)."""
    path = tmp_path / "old" / "store.sqlite"
    path.parent.mkdir()
    shutil.copyfile(FIXTURE, path)
    return path


def rows(path: Path, table: str) -> list[tuple]:
    """Every row of the table as stored, in storage order."""
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        db.close()


def columns(path: Path, table: str) -> dict[str, list]:
    """Every column of the table as stored, each a list of its values in storage order (a migration may add a
    column: the others are compared)."""
    db = sqlite3.connect(path)
    try:
        cur = db.execute(f"SELECT * FROM {table} ORDER BY rowid")
        values = cur.fetchall()
        return {d[0]: [row[i] for row in values] for i, d in enumerate(cur.description)}
    finally:
        db.close()


def kept(before: dict, after: dict) -> bool:
    """Every table's columns of before are in after with the same values; added columns hold NULL only."""
    return all(all(after[t].get(c) == v for c, v in cols.items()) and all(
        set(after[t][c]) <= {None} for c in set(after[t]) - set(cols)) for t, cols in before.items())


def meta(path: Path) -> dict[str, str]:
    return dict(rows(path, "meta"))


def accuracy_columns(table: Path) -> list[dict]:
    with open(table, newline="") as f:
        return [{k: row[k] for k in ("arch", "mean", "sd", "n_params", "rounds")} for row in csv.DictReader(f)]


def summary(store: Store) -> list[tuple]:
    return [(r["study"], r["arch"], r["round"], r["seed"], r["test_acc"], r["n_params"], r["test_correct"])
            for study in store.studies() for r in store.runs(study)]


def test_the_fixture_is_a_store_of_0_2_0_without_a_schema_version(old_store):
    """The fixture is what the tests below take it for: a 0.2.0 store, no schema version recorded."""
    assert meta(old_store) == {"format": schema.FORMAT}
    assert {row[11] for row in rows(old_store, "runs")} == {"0.2.0"}  # package_version


def test_a_reader_reads_an_old_store_as_it_is_and_changes_nothing_in_it(old_store):
    """Opened read-only, a 0.2.0 store shows its studies and runs, and not one byte of the file changes."""
    before = old_store.read_bytes()
    store = Store(old_store, create=False)
    try:
        assert store.studies() == STUDIES
        assert summary(store) == RUNS_0_2_0
        assert all(r["package_version"] == "0.2.0" and r["config"]["config"]["size"] == 14
                   for s in STUDIES for r in store.runs(s))
        assert {len(store.curves(s)) for s in STUDIES} == {4 * 2, 1 * 2}  # two epochs a run
        assert set(store.answers("paper-quick-size14")) == {"siamese_ws_aux", "transfer"}
    finally:
        store.close()
    assert old_store.read_bytes() == before
    assert "schema" not in meta(old_store)


@pytest.mark.parametrize("study", STUDIES)
def test_the_report_of_an_old_store_has_the_accuracies_0_2_0_reported(old_store, tmp_path, study):
    """Today's report of a study that 0.2.0 ran has the accuracy table 0.2.0's own report had, and leaves the
    store as it was."""
    before = old_store.read_bytes()
    store = Store(old_store, create=False)
    try:
        report = write_report(store, study, tmp_path / "out")
    finally:
        store.close()
    assert report.exists()
    assert accuracy_columns(tmp_path / "out" / "table.csv") == TABLES_0_2_0[study]
    assert old_store.read_bytes() == before


def test_a_writer_migrates_an_old_store_to_this_version_and_keeps_every_run(old_store):
    """Opened to write, a 0.2.0 store records this schema version, and its runs, curves, kept weights and answers
    are all still there, row for row."""
    tables = ("studies", "runs", "curves", "models", "answers")
    before = {t: columns(old_store, t) for t in tables}
    assert "schema" not in meta(old_store)
    store = Store(old_store)
    try:
        assert store.studies() == STUDIES
        assert summary(store) == RUNS_0_2_0
    finally:
        store.close()
    assert meta(old_store) == {"format": schema.FORMAT, "schema": str(schema.VERSION)}
    assert kept(before, {t: columns(old_store, t) for t in tables})
    Store(old_store).close()  # opened again: already at this version, nothing more to do
    assert meta(old_store)["schema"] == str(schema.VERSION)
    assert kept(before, {t: columns(old_store, t) for t in tables})


def test_the_model_0_2_0_kept_loads_as_a_network_in_eval_mode(old_store):
    """load_model reads the weights 0.2.0 kept into a network in eval mode that answers pairs, without writing to
    the store."""
    before = old_store.read_bytes()
    net, cfg, (mean, std) = load_model(old_store, "kept", "transfer", 0)
    assert isinstance(net, torch.nn.Module) and not net.training
    assert not any(m.training for m in net.modules())
    assert cfg.size == 14 and net.k == cfg.members == 1
    assert std > 0
    x = torch.zeros(3, 2, cfg.size, cfg.size)
    with torch.no_grad():
        cmp, digits = net(((x - mean) / std).expand(net.k, *x.shape))
    assert cmp.shape == (1, 3) and digits.shape == (1, 3, 2, 10)
    assert old_store.read_bytes() == before


@pytest.mark.parametrize("create", [True, False], ids=["writer", "reader"])
def test_a_store_of_a_newer_schema_is_refused_and_left_untouched(old_store, create):
    """A store that records a schema version above this code's is refused in one line that says a newer digitpairs
    wrote it, by a reader as by a writer, and the file is not changed."""
    db = sqlite3.connect(old_store)
    db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(schema.VERSION + 1),))
    db.commit()
    db.close()
    before = old_store.read_bytes()
    with pytest.raises(UserError, match="newer digitpairs") as e:
        Store(old_store, create=create)
    assert "\n" not in str(e.value) and str(old_store) in str(e.value)
    assert old_store.read_bytes() == before
    assert meta(old_store)["schema"] == str(schema.VERSION + 1)


@pytest.mark.slow
def test_a_study_0_2_0_ran_resumes_and_trains_only_the_missing_round(old_store, tmp_path, real_data_dir):
    """Asked for a third round, the study that 0.2.0 ran to two trains round 2 of each variant and nothing else:
    the stored rounds keep their rows exactly, test accuracy included."""
    old_runs = {row[:3]: row for row in rows(old_store, "runs")}
    old_curves = rows(old_store, "curves")
    code = main(["reproduce", "--quick", "--size", "14", "--archs", "siamese_ws_aux,transfer", "--no-keep-models",
                 "--rounds", "3", "--store", str(old_store), "--out", str(tmp_path / "out"),
                 "--data-dir", str(real_data_dir), "--workers", "1"])
    assert code == 0
    assert meta(old_store)["schema"] == str(schema.VERSION)
    runs = {row[:3]: row for row in rows(old_store, "runs")}
    new = sorted(set(runs) - set(old_runs))
    assert new == [("paper-quick-size14", "siamese_ws_aux", 2), ("paper-quick-size14", "transfer", 2)]
    width = len(next(iter(old_runs.values())))  # the columns 0.2.0 wrote; a migration appends NULLs to its rows
    assert {k: runs[k][:width] for k in old_runs} == old_runs  # every column of the stored rounds, as 0.2.0 wrote it
    assert all(set(runs[k][width:]) <= {None} for k in old_runs)
    assert rows(old_store, "curves")[:len(old_curves)] == old_curves
    store = Store(old_store, create=False)
    try:
        assert store.studies() == STUDIES  # the same study grew; no new one
    finally:
        store.close()
    table = accuracy_columns(tmp_path / "out" / "table.csv")
    assert [(r["arch"], r["rounds"]) for r in table] == [("siamese_ws_aux", "3"), ("transfer", "3")]
