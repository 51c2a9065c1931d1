import os
import sqlite3
import subprocess
import sys

import pytest
import torch

from digitpairs.spec.records import RunResult
from digitpairs.store import Store
from tests.support import run_cli

CUDA = torch.cuda.is_available()


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


BAD = {  # a few through the console script itself, in a subprocess: the line a user sees
    "unknown architecture": (["reproduce", "--archs", "siamese_ws,nonsense"], "unknown architecture 'nonsense'"),
    "word for a number": (["reproduce", "--rounds", "many"], "positive integer"),
    "unknown command": (["frobnicate"], "invalid choice"),
    "impossible lever": (["run", "beyond", "--quick", "--size", "14", "--seed", "-1"], "seed must be in [0, "),
    "path out of the runs folder": (["reproduce", "--study", "../escaped"], "not a valid name"),
    "more pairs than MNIST": (["reproduce", "--n-pairs", "40000"], "n_pairs must be in [1, 30000]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, populated_store, tmp_path):
    args, expected = BAD[case]
    before = dump(populated_store)
    extra = ["--store", populated_store] if args[0] in ("reproduce", "run") else []
    p = run_cli(*args, *extra, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert expected in p.stderr
    assert dump(populated_store) == before
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escaped").exists()  # no report folder anywhere


# Every flag of every subcommand with a wrong type, a negative, a zero, a huge value, NaN/inf, an empty string:
# (arguments, what the one line says). In-process through cli.main; nothing may reach training.
FLAGS = {
    "rounds zero": (["reproduce", "--rounds", "0"], "--rounds: expected a positive integer up to 1000"),
    "rounds huge": (["reproduce", "--rounds", "100000"], "--rounds: expected a positive integer up to 1000"),
    "rounds word": (["run", "paper", "--rounds", "x"], "--rounds: expected a positive integer"),
    "epochs negative": (["reproduce", "--epochs", "-3"], "--epochs"),
    "epochs huge": (["reproduce", "--epochs", "100000"], "epochs must be in [1, 1000]"),
    "epochs float": (["reproduce", "--epochs", "1.5"], "--epochs: expected a positive integer"),
    "size": (["reproduce", "--size", "20"], "size must be 14 or 28"),
    "size zero": (["run", "alpha", "--size", "0"], "size must be 14 or 28"),
    "pairs zero": (["reproduce", "--n-pairs", "0"], "--n-pairs"),
    "pairs beyond MNIST": (["reproduce", "--n-pairs", "30001"], "n_pairs must be in [1, 30000]"),
    "test pairs beyond MNIST": (["reproduce", "--n-test", "5001"], "n_test must be in [1, 5000]"),
    "batch zero": (["reproduce", "--batch-size", "0"], "--batch-size"),
    "batch huge": (["reproduce", "--batch-size", "100000"], "batch_size must be in [1, 60000]"),
    "lr nan": (["reproduce", "--lr", "nan"], "lr must be a finite number, not nan"),
    "lr inf": (["reproduce", "--lr", "inf"], "lr must be a finite number, not inf"),
    "lr zero": (["reproduce", "--lr", "0"], "lr must be in (0, 1]"),
    "lr negative": (["reproduce", "--lr=-1"], "lr must be in (0, 1]"),
    "lr word": (["reproduce", "--lr", "fast"], "invalid float value"),
    "alpha nan": (["reproduce", "--alpha", "nan"], "alpha must be a finite number"),
    "alpha -inf": (["reproduce", "--alpha=-inf"], "alpha must be a finite number"),
    "alpha negative": (["reproduce", "--alpha=-0.5"], "alpha must be in [0, 100]"),
    "alpha huge": (["reproduce", "--alpha", "1e9"], "alpha must be in [0, 100]"),
    "aux loss": (["reproduce", "--aux-loss", "mse"], "invalid choice"),
    "seed negative": (["reproduce", "--seed=-1"], "seed must be in [0, 4294967295]"),
    "seed huge": (["reproduce", "--seed", str(2**64)], "seed must be in [0, 4294967295]"),
    "precision": (["reproduce", "--precision", "fp16"], "invalid choice"),
    "members zero": (["run", "paper", "--members", "0"], "members must be in [1, 16], not 0"),
    "members word": (["run", "paper", "--members", "two"], "--members: invalid int value"),
    "channels one": (["run", "paper", "--channels", "16"], "--channels: expected two comma-separated integers"),
    "channels zero": (["reproduce", "--channels", "0,32"], "channels must be two widths in [1, 512]"),
    "schedule": (["run", "paper", "--schedule", "x"], "invalid choice: 'x'"),
    "swap with a value": (["run", "paper", "--swap=no"], "ignored explicit argument 'no'"),
    "dropout one": (["reproduce", "--dropout-p", "1"], "dropout_p must be in [0, 1)"),
    "n_val beyond n_pairs": (["run", "paper", "--quick", "--n-val", "200"], "n_val must be in [0, n_pairs=200)"),
    "device": (["reproduce", "--device", "gpu"], "device must be auto, cpu, cuda or cuda:N"),
    "device empty": (["run", "paper", "--device", ""], "device must be auto, cpu, cuda or cuda:N"),
    "ray address unreachable": (["run", "paper", "--backend", "ray", "--address", "127.0.0.1:1"],
                                "cannot reach the Ray cluster at 127.0.0.1:1"),
    "ray address port huge": (["run", "paper", "--backend", "ray", "--address", "127.0.0.1:99999"],
                              "a port is 1 to 65535"),
    "ray address port not a number": (["run", "paper", "--backend", "ray", "--address", "127.0.0.1:\u00b2"],
                                      "a port is 1 to 65535"),
    "device index huge": (["reproduce", "--device", "cuda:2147483648"], "device must be auto, cpu, cuda or cuda:N"),
    "study up a folder": (["reproduce", "--study", "../escaped"], "not a valid name"),
    "study absolute": (["reproduce", "--study", "/tmp/x"], "not a valid name"),
    "study hidden": (["run", "paper", "--study", ".x"], "not a valid name"),
    "study empty": (["reproduce", "--study", ""], "not a valid name"),
    "store empty": (["reproduce", "--store", ""], "--store: expected a path"),
    "out empty": (["reproduce", "--out", ""], "--out: expected a path"),
    "workers zero": (["reproduce", "--workers", "0"], "--workers"),
    "threads zero": (["reproduce", "--threads", "0"], "--threads"),
    "threads huge": (["reproduce", "--threads", "100000"], "--threads: expected a positive integer up to 1024"),
    "batch rounds zero": (["reproduce", "--batch-rounds", "0"], "--batch-rounds"),
    "backend": (["reproduce", "--backend", "spark"], "invalid choice"),
    "address without ray": (["reproduce", "--address", "10.0.0.1:6379"], "add --backend ray"),
    "archs empty": (["reproduce", "--archs", ""], "expected comma-separated architecture names"),
    "archs twice": (["reproduce", "--archs", "siamese_ws,siamese_ws"], "siamese_ws named twice"),
    "archs unknown": (["reproduce", "--archs", "siamese_ws,nonsense"], "unknown architecture 'nonsense'"),
    "data dir empty": (["reproduce", "--data-dir", ""], "--data-dir: expected a path"),
    "plugin missing": (["reproduce", "--plugin", "no_such_module"], "cannot import plugin"),
    "study file missing": (["run", "no_such_study"], "no study file"),
    "study file empty name": (["run", ""], "expected a path"),
    "study file a folder": (["run", "."], "cannot read the study file"),
    "bench arch": (["bench", "--arch", "nonsense"], "unknown architecture"),
    "bench size": (["bench", "--arch", "ws_bn_aug_bayes", "--size", "20"], "invalid choice: 20"),
    "bench epochs huge": (["bench", "--epochs", "1000000"], "epochs must be in [1, 1000]"),
    "bench epochs zero": (["bench", "--epochs", "0"], "--epochs"),
    "bench rounds huge": (["bench", "--rounds", "101"], "--rounds: expected a positive integer up to 100"),
    "bench precision": (["bench", "--precision", "fp64"], "invalid choice"),
    "bench device": (["bench", "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    "list size": (["list", "--size", "7"], "invalid choice"),
    "report no store": (["report", "--store", "/nonexistent/s.sqlite"], "no store at"),
    "report unknown study": (["report", "--study", "nope"], "no study 'nope'"),
    "export unknown study": (["export", "mlflow", "--study", "nope"], "no study 'nope'"),
    "export no store": (["export", "mlflow", "--store", "/nonexistent/s.sqlite"], "no store at"),
}


@pytest.mark.parametrize("case", list(FLAGS))
def test_every_flag_refuses_bad_values_in_one_line(case, populated_store, tmp_path, monkeypatch, capsys):
    from digitpairs.cli import main as cli
    from digitpairs.cli import run as run_command
    from digitpairs.runner import bench

    def no_training(*args, **kwargs):
        raise AssertionError("bad input reached training")

    monkeypatch.setattr(run_command, "run_study", no_training)
    monkeypatch.setattr(bench, "run", no_training)
    monkeypatch.chdir(tmp_path)
    args, expected = FLAGS[case]
    args = [str(a) for a in args]
    if args[0] in ("reproduce", "run", "report", "export") and "--store" not in args:
        args += ["--store", str(populated_store)]
    before = dump(populated_store)
    try:
        code = cli.main(args)
    except SystemExit as e:  # argparse's errors: Parser.error prints one line and exits with 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert dump(populated_store) == before
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escaped").exists()


def test_report_of_a_stored_study_with_an_unsafe_name_needs_out(tmp_path, monkeypatch):
    """A store made by an older version may hold any study name: its report goes only where --out says."""
    from digitpairs.cli import main as cli

    store = Store(tmp_path / "s.sqlite")
    fill_unsafe = RunResult(0, 0, 0.9, None, 10, 1.0, 1, [])
    store.ensure_study("../escaped", {"rounds": 1, "variants": []})
    store.add_runs("../escaped", "a", {}, [fill_unsafe])
    store.close()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(["report", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert not (tmp_path / "escaped").exists() and not (work / "runs").exists()


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
    assert Store(populated_store, create=False).studies() == ["st"]  # the study failed: it is not recorded


def test_unwritable_checkpoints_are_found_before_training(tmp_path, populated_store, real_data_dir):
    (tmp_path / "checkpoints").write_text("")  # where the checkpoints' folder should be
    p = run_cli("reproduce", "--quick", "--archs", "siamese_ws", "--store", populated_store, "--data-dir",
                real_data_dir, "--out", tmp_path / "o")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "cannot write checkpoints in" in p.stderr and "--checkpoint-every 0" in p.stderr
    assert Store(populated_store, create=False).studies() == ["st"]


def test_list_prints_every_architecture():
    p = run_cli("list")
    assert p.returncode == 0
    assert all(name in p.stdout for name in ("transfer", "siamese_nows", "siamese_ws_aux_bn_drop"))
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines()[1:]}
    assert rows["transfer"][2:5] == ["digits", "logic", "shared"]  # objective, head, branch
    assert rows["siamese_ws_aux_bn_drop"][3:6] == ["comparison+digits", "mlp", "shared,bn,dropout"]


def test_the_local_backend_does_not_import_ray():
    code = ("import sys, digitpairs.cli.main, digitpairs.cli.run, digitpairs.runner.study, digitpairs.engine, "
            "digitpairs.report.write; "
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_device_reaches_every_run_but_not_the_study_name(tmp_path, monkeypatch):
    from digitpairs.cli import main as cli
    from digitpairs.cli import run as run_command

    seen = {}
    monkeypatch.setattr(run_command, "run_study", lambda s, *a, **k: seen.setdefault("study", s))
    monkeypatch.setattr(run_command, "write_report", lambda store, name, out: out / "report.md")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", "--quick", "--device", "cpu", "--epochs", "3", "--store", "s.sqlite"]) == 0
    assert seen["study"].name == "paper-quick-epochs3"
    assert {v.cfg.device for v in seen["study"].variants} == {"cpu"}
    seen.clear()
    assert cli.main(["reproduce", "--quick", "--matmul-conv", "--epochs", "3", "--store", "s.sqlite"]) == 0
    assert seen["study"].name == "paper-quick-epochs3"
    assert all(v.cfg.matmul_conv and v.cfg.cuda_graphs == CUDA for v in seen["study"].variants)


@pytest.mark.parametrize("flag, on_a_gpu, graphs", [
    ([], True, True), ([], False, False), (["--no-cuda-graphs"], True, False), (["--cuda-graphs"], True, True)])
def test_cuda_graphs_are_on_by_default_where_training_runs_on_a_gpu(tmp_path, monkeypatch, flag, on_a_gpu, graphs):
    """Neither --cuda-graphs nor --no-cuda-graphs: each variant captures its steps where its device is a GPU
    (device.graphs_by_default); either flag decides for every variant. Ray's workers decide "auto" themselves."""
    from digitpairs import device
    from digitpairs.cli import main as cli
    from digitpairs.cli import run as run_command

    seen = {}
    monkeypatch.setattr(run_command, "run_study", lambda s, *a, **k: seen.setdefault("study", s))
    monkeypatch.setattr(run_command, "write_report", lambda store, name, out: out / "report.md")
    clusters = []
    monkeypatch.setattr(device, "graphs_by_default", lambda name, cluster=False: clusters.append(cluster) or on_a_gpu)
    monkeypatch.setattr(device, "check", lambda name, graphs=False: None)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", "--quick", *flag, "--store", "s.sqlite"]) == 0
    assert {v.cfg.cuda_graphs for v in seen["study"].variants} == {graphs}
    assert seen["study"].name == "paper-quick" and isinstance(seen["study"].variants, tuple)
    assert set(clusters) <= {False}
    seen.clear()
    assert cli.main(["reproduce", "--quick", *flag, "--backend", "ray", "--store", "s.sqlite"]) == 0
    assert {v.cfg.cuda_graphs for v in seen["study"].variants} == {graphs}
    if not flag:  # under Ray, the rule is asked for a cluster's: only a device that names cuda
        assert clusters[-1] is True
    # a study file that sets cuda_graphs keeps it, unless a flag says otherwise
    (tmp_path / "mine.toml").write_text('archs = ["siamese_ws"]\n[config]\ncuda_graphs = false\n')
    seen.clear()
    assert cli.main(["run", "mine.toml", "--quick", *flag, "--store", "s.sqlite"]) == 0
    assert {v.cfg.cuda_graphs for v in seen["study"].variants} == {bool(flag) and graphs}


@pytest.mark.parametrize("flag, on_a_gpu, graphs", [
    ([], True, True), ([], False, False), (["--no-cuda-graphs"], True, False)])
def test_bench_captures_by_default_on_a_gpu(monkeypatch, flag, on_a_gpu, graphs):
    from digitpairs import device
    from digitpairs.cli import main as cli
    from digitpairs.runner import bench

    seen = {}
    monkeypatch.setattr(bench, "run", lambda arch, cfg, *a, **k: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(device, "graphs_by_default", lambda name, cluster=False: on_a_gpu)
    monkeypatch.setattr(device, "check", lambda name, graphs=False: None)
    assert cli.main(["bench", *flag]) == 0
    assert seen["cfg"].cuda_graphs is graphs


def test_no_cuda_graphs_on_the_cpu_is_no_error(tmp_path, monkeypatch):
    from digitpairs.cli import main as cli
    from digitpairs.cli import run as run_command

    seen = {}
    monkeypatch.setattr(run_command, "run_study", lambda s, *a, **k: seen.setdefault("study", s))
    monkeypatch.setattr(run_command, "write_report", lambda store, name, out: out / "report.md")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", "--quick", "--device", "cpu", "--no-cuda-graphs", "--store", "s.sqlite"]) == 0
    assert not any(v.cfg.cuda_graphs for v in seen["study"].variants)


def test_graphs_by_default_follows_the_device():
    from digitpairs.device import graphs_by_default

    assert graphs_by_default("cuda") and graphs_by_default("cuda:1") and not graphs_by_default("cpu")
    assert graphs_by_default("auto") == CUDA and not graphs_by_default("auto", cluster=True)


def test_a_damaged_store_is_one_line_and_trains_nothing(tmp_path, populated_store):
    """A page of the runs table overwritten: the store opens, reading it fails. One line, exit 2, and a study is
    refused before its training, not after (SQLite's quick check)."""
    db = sqlite3.connect(populated_store)
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(populated_store, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xde\xad\xbe\xef" * (size // 4))
    damaged = populated_store.read_bytes()
    for args in (["report", "--out", tmp_path / "o"], ["reproduce", "--quick", "--study", "new", "--out", tmp_path / "n"]):
        p = run_cli(*args, "--store", populated_store, cwd=tmp_path)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "is damaged" in p.stderr and "restore a copy" in p.stderr
    assert populated_store.read_bytes() == damaged


def test_control_characters_in_a_path_stay_on_one_line(tmp_path, populated_store):
    p = run_cli("report", "--store", tmp_path / "no\nsuch\x1b[31m.sqlite")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "\x1b" not in p.stderr, p.stderr
    assert "no\\nsuch\\x1b[31m.sqlite" in p.stderr


def test_the_report_goes_beside_its_store(tmp_path):
    """Two stores in two folders: each one's report lands beside it, never over the other's runs/NAME."""
    from tests.support import fill

    work, path = tmp_path / "elsewhere", tmp_path / "a" / "s.sqlite"
    work.mkdir()
    store = Store(path)
    fill(store, {"a": [0.90, 0.91]})
    store.close()
    p = run_cli("report", "--store", path, cwd=work)
    assert p.returncode == 0, p.stderr
    assert (path.parent / "st" / "report.md").is_file() and not any(work.iterdir())


def test_the_store_and_the_machine_failures_in_one_line():
    """What cli.failure makes of what reaches it: a read-only store, a damaged one, a path too long, a full disk; a
    programming error on the store is not called damage."""
    import errno

    from digitpairs.cli.main import failure

    assert failure(sqlite3.OperationalError("attempt to write a readonly database"), "s.sqlite") == (
        2, ("the store s.sqlite cannot be written (attempt to write a readonly database): pass --store with a "
            "writable file (the runs stored so far stay)"))
    assert failure(sqlite3.DatabaseError("database disk image is malformed"), "s.sqlite")[0] == 2
    assert failure(OSError(errno.ENAMETOOLONG, "File name too long"), "s")[1].startswith("a path is too long")
    assert failure(OSError(errno.ENOSPC, "No space left on device"), "s")[0] == 1
    code, line = failure(sqlite3.ProgrammingError("Cannot operate on a closed database."), "s")
    assert code == 1 and "damaged" not in line


def test_version_says_the_version_code_hash_torch_and_device():
    from digitpairs import __version__
    from digitpairs.spec.provenance import code_version

    p = run_cli("--version")
    assert p.returncode == 0 and p.stdout.startswith(f"digitpairs {__version__} (code hash {code_version()['code_hash']}")
    assert f"torch {torch.__version__}" in p.stdout and "--device auto:" in p.stdout
    assert run_cli().returncode == 2  # no command: one line


@pytest.mark.parametrize("command, resume", [("bench", False), ("run", True)])
def test_an_interrupt_speaks_of_the_store_only_where_runs_are_stored(command, resume, monkeypatch, capsys):
    from digitpairs.cli import engine_commands, main, run

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_commands, "cmd_bench", interrupted)
    monkeypatch.setattr(run, "cmd_run", interrupted)
    assert main.main([command] + (["paper"] if command == "run" else [])) == 130
    err = capsys.readouterr().err
    assert err.startswith("digitpairs: interrupted") and ("in the store" in err) == resume
