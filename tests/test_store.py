import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from digitpairs import UserError
from digitpairs.store import Store
from digitpairs.train import RunResult


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


@pytest.mark.slow
def test_killed_study_resumes_without_loss_or_duplicates(tmp_path, real_data_dir):
    """kill -9 in the middle of a study, then the same command: every run exactly once, finished ones unchanged."""
    store_path = tmp_path / "s.sqlite"
    cmd = [sys.executable, "-m", "digitpairs", "reproduce", "--quick", "--rounds", "4", "--archs",
           "siamese_ws,transfer", "--epochs", "3", "--store", str(store_path), "--out", str(tmp_path / "out"),
           "--data-dir", str(real_data_dir), "--workers", "1", "--batch-rounds", "2"]  # 4 units, one at a time
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and done < 2 and proc.poll() is None:
        time.sleep(0.05)
        if store_path.exists():
            try:
                db = sqlite3.connect(store_path)
                done = db.execute("SELECT count(*) FROM runs").fetchone()[0]
                db.close()
            except sqlite3.Error:
                pass
    assert proc.poll() is None, "the study finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = Store(store_path)
    before = {(r["arch"], r["round"]): (r["test_acc"], r["finished"]) for r in first.runs("paper-quick-epochs3")}
    first.close()
    assert 2 <= len(before) <= 6
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    store = Store(store_path)
    after = store.runs("paper-quick-epochs3")
    keys = [(r["arch"], r["round"]) for r in after]
    assert len(keys) == len(set(keys)) == 8
    assert all((r["test_acc"], r["finished"]) == before[(r["arch"], r["round"])]
               for r in after if (r["arch"], r["round"]) in before)
    counts = store.db.execute("SELECT arch, round, count(*) FROM curves GROUP BY arch, round").fetchall()
    assert len(counts) == 8 and all(c == 3 for _, _, c in counts)


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
    with pytest.raises(UserError, match="variant b is missing"):
        store.ensure_study("st", old)
