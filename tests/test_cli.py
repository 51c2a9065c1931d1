import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import run_cli
from digitpairs.store import Store
from digitpairs.train import RunResult


@pytest.fixture
def populated_store(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.ensure_study("st", {})
    store.add_runs("st", "siamese_ws", {"arch": {"label": "WS", "report": None}},
                   [RunResult(0, 0, 0.9, None, 10, 1.0, 1,
                              [{"epoch": 1, "train_cmp": .5, "train_loss": .5, "val_acc": None, "test_acc": .9}])])
    store.close()
    return path


def dump(path):
    db = sqlite3.connect(path)
    rows = db.execute("SELECT * FROM runs").fetchall() + db.execute("SELECT * FROM curves").fetchall()
    db.close()
    return rows


BAD = {
    "unknown architecture": (["reproduce", "--archs", "siamese_ws,nonsense"], "unknown architecture 'nonsense'"),
    "zero rounds": (["reproduce", "--rounds", "0"], "--rounds"),
    "negative epochs": (["reproduce", "--epochs", "-3"], "--epochs"),
    "zero pairs": (["reproduce", "--n-pairs", "0"], "--n-pairs"),
    "bad size": (["reproduce", "--size", "20"], "size must be 14 or 28"),
    "word for a number": (["reproduce", "--rounds", "many"], "positive integer"),
    "unknown command": (["frobnicate"], "invalid choice"),
    "cluster address without ray": (["reproduce", "--address", "10.0.0.1:6379"], "add --backend ray"),
    "unknown backend": (["reproduce", "--backend", "spark"], "invalid choice"),
    "impossible lever": (["run", "beyond", "--quick", "--size", "14", "--seed", "-1"], "seed must be >= 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, populated_store):
    args, expected = BAD[case]
    before = dump(populated_store)
    p = run_cli(*args, "--store", populated_store) if args[0] in ("reproduce", "run") else run_cli(*args)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert expected in p.stderr
    assert dump(populated_store) == before


def test_unwritable_output_folder(tmp_path, populated_store):
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = run_cli("reproduce", "--quick", "--store", populated_store, "--out", blocker / "out")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--out" in p.stderr


def test_not_a_store(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n" * 50)
    for args in (["reproduce", "--quick"], ["report"]):
        p = run_cli(*args, "--store", path)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
        assert "not a digitpairs store" in p.stderr
    assert path.read_text() == "my notes\n" * 50


def test_corrupt_data_without_sources(tmp_path, populated_store):
    data = tmp_path / "mnist"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03garbage")
    env = dict(os.environ, DIGITPAIRS_MIRRORS="", PATH="/nonexistent")
    before = dump(populated_store)
    p = run_cli("reproduce", "--quick", "--store", populated_store, "--data-dir", data, "--out", tmp_path / "o",
                env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "put the four uncompressed idx files" in p.stderr.lower()
    assert dump(populated_store) == before


def test_list_prints_every_architecture():
    p = run_cli("list")
    assert p.returncode == 0
    assert all(name in p.stdout for name in ("transfer", "siamese_nows", "siamese_ws_aux_bn_drop"))


def test_the_local_backend_does_not_import_ray():
    code = ("import sys, digitpairs.cli, digitpairs.study, digitpairs.train, digitpairs.report; "
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
