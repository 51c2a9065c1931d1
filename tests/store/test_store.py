import dataclasses
import sqlite3
import subprocess
import sys
import time

import pytest

from digitpairs import UserError, __version__
from digitpairs.spec.records import RunResult
from digitpairs.store import Store


def result(r, acc=0.9):
    return RunResult(r, r, acc, None, 100, 1.0, 1,
                     [{"epoch": 1, "train_cmp": 0.5, "train_loss": 0.6, "val_acc": None, "test_acc": acc}])


def test_runs_are_written_once(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.ensure_study("st", {"epochs": 1})
    store.add_runs("st", "a", {"x": 1}, [result(0), result(1)])
    store.add_runs("st", "a", {"x": 1}, [result(1, acc=0.1)])  # already there: kept as it was
    assert store.done("st") == {("a", 0), ("a", 1)}
    assert [r["test_acc"] for r in store.runs("st")] == [0.9, 0.9]
    assert len(store.curves("st")) == 2
    with pytest.raises(UserError, match="another config .epochs 1 -> 2"):
        store.ensure_study("st", {"epochs": 2})


def test_a_study_can_grow_more_rounds_but_not_change_its_variants(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    spec = {"rounds": 2, "variants": [{"name": "a", "config": {"epochs": 25}}]}
    store.ensure_study("st", spec)
    store.ensure_study("st", spec | {"rounds": 5})
    assert store.study_config("st")["rounds"] == 5
    with pytest.raises(UserError, match=r"variants\.a\.config\.epochs 25 -> 5"):
        store.ensure_study("st", {"rounds": 5, "variants": [{"name": "a", "config": {"epochs": 5}}]})


@pytest.mark.parametrize("content", [b"not a database at all" * 100, None])
def test_foreign_files_are_refused_and_untouched(tmp_path, content):
    path = tmp_path / "other.sqlite"
    if content is None:  # a real SQLite database of something else
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE t (x)")
        db.commit()
        db.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(UserError, match="not a digitpairs store"):
        Store(path)
    assert path.read_bytes() == before


def test_a_study_can_gain_variants_and_newer_fields_at_their_defaults(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    old = {"rounds": 2, "variants": [{"name": "a", "config": {"epochs": 25}, "arch": {"name": "a", "bn": False}}]}
    store.ensure_study("st", old)
    # the new spec knows fields the stored one predates (at their defaults) and has one more variant
    grown = {"rounds": 2, "variants": [{"name": "a", "config": {"epochs": 25, "members": 1, "tta": 1},
                                        "arch": {"name": "a", "bn": False, "head": "mlp"}},
                                       {"name": "b", "config": {"epochs": 50}}]}
    store.ensure_study("st", grown)
    assert [v["name"] for v in store.study_config("st")["variants"]] == ["a", "b"]
    with pytest.raises(UserError, match=r"variants\.a\.config\.members 1 -> 3"):
        store.ensure_study("st", {"rounds": 2, "variants": [{"name": "a", "config": {"epochs": 25, "members": 3}},
                                                             {"name": "b", "config": {"epochs": 50}}]})
    with pytest.raises(UserError, match=r"has variants this command leaves out \(b\), and a study never shrinks"):
        store.ensure_study("st", old)


def test_a_study_never_shrinks_and_keeps_its_grouping(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    v = {"name": "a", "config": {"epochs": 25, "device": "cpu"}, "group_rounds": 3}
    store.ensure_study("st", {"rounds": 10, "variants": [v]})
    with pytest.raises(UserError, match="has 10 rounds, more than the 5 asked, and a study never shrinks: pass --rounds 10"):
        store.ensure_study("st", {"rounds": 5, "variants": [v]})
    # resumed elsewhere: another device, another group size computed there; the stored grouping stays
    moved = v | {"config": {"epochs": 25, "device": "cuda"}, "group_rounds": 10}
    spec = store.ensure_study("st", {"rounds": 12, "variants": [moved, {"name": "b", "group_rounds": 4}]})
    assert [(x["name"], x["group_rounds"]) for x in spec["variants"]] == [("a", 3), ("b", 4)]
    assert store.study_config("st") == spec and spec["rounds"] == 12


def test_a_store_locked_past_the_timeout_is_busy_in_one_line(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing, and not letting go
    try:
        with pytest.raises(UserError, match="store busy, try again"):
            Store(path, timeout=0.2)
        reader = Store(path, create=False, timeout=0.2)  # a report only reads: it does not wait
        assert reader.studies() == []
        reader.close()
    finally:
        other.execute("ROLLBACK")
        other.close()


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE studies (study TEXT PRIMARY KEY, config TEXT NOT NULL, created TEXT NOT NULL DEFAULT (datetime('now')));
CREATE TABLE runs (study TEXT NOT NULL, arch TEXT NOT NULL, round INTEGER NOT NULL, seed INTEGER NOT NULL,
    config TEXT NOT NULL, test_acc REAL NOT NULL, val_acc REAL, n_params INTEGER NOT NULL, wall_s REAL NOT NULL,
    batch INTEGER NOT NULL, torch_version TEXT NOT NULL, package_version TEXT NOT NULL,
    finished TEXT NOT NULL DEFAULT (datetime('now')), PRIMARY KEY (study, arch, round));
CREATE TABLE curves (study TEXT NOT NULL, arch TEXT NOT NULL, round INTEGER NOT NULL, epoch INTEGER NOT NULL,
    train_cmp REAL NOT NULL, train_loss REAL NOT NULL, val_acc REAL, test_acc REAL NOT NULL,
    PRIMARY KEY (study, arch, round, epoch));
INSERT INTO meta VALUES ('format', 'digitpairs-store-1');
INSERT INTO studies (study, config) VALUES ('st', '{"rounds": 2, "variants": [{"name": "a"}]}');
INSERT INTO runs (study, arch, round, seed, config, test_acc, val_acc, n_params, wall_s, batch, torch_version,
    package_version) VALUES ('st', 'a', 0, 0, '{}', 0.9, NULL, 100, 1.0, 2, '2.5.0', '0.1.0');
"""


def test_a_store_of_version_0_1_opens_read_only_and_gains_the_new_columns_when_written(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    before = path.read_bytes()
    reader = Store(path, create=False)  # report, export: nothing written
    assert reader.runs("st")[0]["code_hash"] is None and reader.runs("st")[0]["test_acc"] == 0.9
    reader.close()
    assert path.read_bytes() == before
    store = Store(path)  # a study command: the claims table and the new columns are added in place
    store.add_runs("st", "a", {}, [result(1)])
    old, new = store.runs("st")
    assert (old["package_version"], old["code_hash"], old["device"]) == ("0.1.0", None, None)
    assert new["package_version"] == __version__ and len(new["code_hash"]) == 12
    assert store.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


CREATE_AT_ONCE = """
import sys, time
from digitpairs.store import Store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
store = Store(sys.argv[1])
store.ensure_study("st", {"rounds": 3, "variants": [{"name": "a", "group_rounds": 2}]})
store.close()
"""


def test_many_processes_create_one_fresh_store_at_once(tmp_path):
    path = tmp_path / "fresh.sqlite"
    at = str(time.time() + 4)  # every process has imported torch by then
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_AT_ONCE, str(path), at], stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    store = Store(path, create=False)
    assert store.studies() == ["st"]


def test_each_run_records_the_code_and_the_device_that_made_it(tmp_path):
    from digitpairs.spec.provenance import code_hash, code_version, git_commit

    store = Store(tmp_path / "s.sqlite")
    store.ensure_study("st", {})
    store.add_runs("st", "a", {}, [dataclasses.replace(result(0), test_correct=181, n_test=200, device="cpu X")])
    run = store.runs("st")[0]
    assert {k: run[k] for k in ("package_version", "code_hash", "git_commit", "torch_version")} == code_version()
    assert (run["test_correct"], run["device"]) == (181, "cpu X")
    assert len(code_hash()) == 12 and code_hash() == code_hash()
    assert git_commit(tmp_path) is None  # not a checkout (or no git at all): no error
    copy = tmp_path / "pkg"
    for name in ("engine/loop.py", "kernels/csrc/k.c", "cli/help.py", "report/words.py"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text("x = 1\n")
    first = code_hash(copy)
    for name in ("cli/help.py", "report/words.py"):  # texts: the numbers stay, and so do the checkpoints
        (copy / name).write_text("x = 2\n")
        assert code_hash(copy) == first
    for name in ("engine/loop.py", "kernels/csrc/k.c"):  # what computes them
        (copy / name).write_text("x = 2\n")
        assert code_hash(copy) != first
        first = code_hash(copy)


def test_the_report_lists_code_versions_and_devices_and_warns_when_a_study_mixes_them():
    from digitpairs.report.provenance import provenance_blocks

    run = {"package_version": "0.2.0", "code_hash": "a" * 12, "git_commit": None, "torch_version": "2.13.0",
           "device": "cpu X"}
    one = provenance_blocks([run, run | {"device": "NVIDIA H100"}])
    assert [[row[-3], row[-1]] for row in one[1][2]] == [["NVIDIA H100", "1"], ["cpu X", "1"]] and len(one) == 3
    mixed = provenance_blocks([run, run | {"package_version": "0.1.0", "code_hash": None, "device": None}])
    assert len(mixed[1][2]) == 2 and "mixes runs of 2 code versions" in mixed[-2][1]


def test_a_read_transaction_sees_one_state_while_another_process_stores(tmp_path):
    """What the report reads inside Store.reading() is of one moment: a run stored meanwhile by another connection
    (another process) appears only after it."""
    store = Store(tmp_path / "s.sqlite")
    store.ensure_study("st", {})
    store.add_runs("st", "a", {}, [result(0)])
    other = Store(tmp_path / "s.sqlite")
    with store.reading():
        before = store.runs("st")
        other.add_runs("st", "a", {}, [result(1)])
        assert store.runs("st") == before and len(before) == 1
    assert len(store.runs("st")) == 2
    other.close()
    store.close()
