"""Faults injected into real studies (subprocesses, real MNIST, a few epochs): an interrupt, four processes on one
fresh store, kill -9 of the driver. Nothing hangs, nothing is lost, no process is left, the numbers do not change."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from digitpairs.base.procfs import descendants
from tests.support import LOGGED, gone, interrupt, start

pytestmark = pytest.mark.slow
RUNS = 30  # 2 variants x 15 rounds; at 28x28 a group is 3 rounds and so is a unit: 10 units


def command(tmp_path, data_dir, name: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "digitpairs", "reproduce", "--quick", "--archs", "siamese_ws,siamese_ws_aux_bn",
            "--rounds", "15", "--epochs", "3", "--batch-rounds", "3", "--workers", str(workers),
            "--store", str(tmp_path / f"{name}.sqlite"), "--out", str(tmp_path / name), "--data-dir", str(data_dir)]


def table(store) -> dict:
    """Every run's numbers and curves, by (variant, round)."""
    db = sqlite3.connect(store)
    runs = {(a, r): (seed, acc, val, batch) for a, r, seed, acc, val, batch in
            db.execute("SELECT arch, round, seed, test_acc, val_acc, batch FROM runs")}
    curves = db.execute("SELECT arch, round, epoch, train_cmp, train_loss, val_acc, test_acc FROM curves "
                        "ORDER BY arch, round, epoch").fetchall()
    counts = db.execute("SELECT COUNT(*), COUNT(DISTINCT arch || '/' || round) FROM runs").fetchone()
    claims = db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    db.close()
    return {"runs": runs, "curves": curves, "counts": counts, "claims": claims}


def stored_runs(store) -> int:
    try:
        db = sqlite3.connect(store, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return 0


def held(store) -> bool:
    """Whether a process holds a claim on a unit of the store's study."""
    try:
        db = sqlite3.connect(store, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.Error:
        return False


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, real_data_dir):
    """The table of the study run once, uninterrupted, by one process."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    p = subprocess.run(command(tmp, real_data_dir, "one", 1), capture_output=True, text=True, timeout=300,
                       check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    out = table(tmp / "one.sqlite")
    assert out["counts"] == (RUNS, RUNS)
    return out


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_ends_the_study_within_5_s_and_loses_nothing(tmp_path, real_data_dir, sig, code):
    proc = start(command(tmp_path, real_data_dir, "s", 2))
    # somewhere in the next units; below it: the workers, and multiprocessing's resource tracker
    logged = interrupt(proc, sig, code, pause=random.Random(sig).uniform(0, 1), least=2)
    stored = table(tmp_path / "s.sqlite")
    assert logged and logged <= set(stored["runs"])
    assert stored["claims"] == 0  # released on the way out


def test_four_processes_share_one_fresh_store(tmp_path, real_data_dir, uninterrupted):
    procs = [start(command(tmp_path, real_data_dir, "shared", 1)) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-1000:] for _, err in outs]
    trained = [sum(bool(LOGGED.match(x)) for x in out.splitlines()) for out, _ in outs]
    assert sum(trained) == RUNS  # each run trained (and logged) once, by one of them
    shared = table(tmp_path / "shared.sqlite")
    assert shared["counts"] == (RUNS, RUNS) and shared["claims"] == 0
    assert shared["runs"] == uninterrupted["runs"] and shared["curves"] == uninterrupted["curves"]


def test_kill_9_thrice_then_the_same_command_gives_the_uninterrupted_table(tmp_path, real_data_dir, uninterrupted):
    cmd = command(tmp_path, real_data_dir, "killed", 2)
    store = tmp_path / "killed.sqlite"
    moments = random.Random(9)
    for _ in range(3):
        before = stored_runs(store)
        proc = start(cmd)
        deadline = time.monotonic() + 240
        while stored_runs(store) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until this run has stored something, then a random moment later
        time.sleep(moments.uniform(0, 1))
        assert proc.poll() is None, "the study ended before its kill"
        workers = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its workers must end with it
        proc.communicate(timeout=60)
        time.sleep(0.5)
        assert gone(workers)
    assert stored_runs(store) < RUNS, "the study finished before the last kill"
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    resumed = table(store)
    assert resumed["counts"] == (RUNS, RUNS) and resumed["claims"] == 0
    assert resumed["runs"] == uninterrupted["runs"] and resumed["curves"] == uninterrupted["curves"]


def test_a_grown_study_keeps_the_grouping_of_an_uninterrupted_one(tmp_path, real_data_dir, uninterrupted):
    cmd = command(tmp_path, real_data_dir, "grown", 2)
    cmd[cmd.index("--archs") + 1] = "siamese_ws_aux_bn"  # one variant is enough here
    at = cmd.index("--rounds") + 1
    first = subprocess.run([*cmd[:at], "13", *cmd[at + 1:]], capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    before = table(tmp_path / "grown.sqlite")["runs"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)  # 13 -> 15 rounds
    assert p.returncode == 0, p.stderr[-2000:]
    grown = table(tmp_path / "grown.sqlite")["runs"]
    # round 12 trained alone in the 13-round study and stays as stored; its group (12, 13, 14) trained again whole
    # for rounds 13 and 14, which are then those of the uninterrupted 15-round study, like every other round
    assert {k: v for k, v in grown.items() if k[1] == 12} == {k: v for k, v in before.items() if k[1] == 12}
    assert {k: v for k, v in grown.items() if k[1] != 12} == {k: v for k, v in uninterrupted["runs"].items()
                                                              if k[1] != 12 and k[0] == "siamese_ws_aux_bn"}


def can_unshare() -> bool:
    """Whether this machine lets the tests start a process as pid 1 of a pid namespace of its own (root, Linux)."""
    try:
        return subprocess.run(["unshare", "-fp", "--mount-proc", "true"], capture_output=True, timeout=10,
                              check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not can_unshare(), reason="no pid namespace can be made here (unshare, as root)")
def test_a_container_restarted_as_pid_1_resumes_its_own_claims(tmp_path, real_data_dir, uninterrupted):
    """The study runs as pid 1 of its own pid namespace, as a container's entrypoint does; it is killed with kill -9
    once it has stored a run, and the same command starts again as pid 1: the dead process's claims carry the same
    host and pid, but not its token and start time, so they are taken over at once (not waited for), and the study
    ends with the uninterrupted table."""
    cmd = ["unshare", "-fp", "--mount-proc", *command(tmp_path, real_data_dir, "container", 1)]
    store = tmp_path / "container.sqlite"
    proc = start(cmd)
    deadline = time.monotonic() + 240
    # once it has stored a run and holds a claim (between two units it holds none for a moment)
    while (stored_runs(store) == 0 or not held(store)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the study ended before its kill"
    pid_1 = descendants(proc.pid)[0]  # unshare's child: the study, pid 1 inside its namespace
    os.kill(pid_1, signal.SIGKILL)
    proc.communicate(timeout=60)
    left = sqlite3.connect(store).execute("SELECT pid FROM claims").fetchall()
    assert left and {pid for (pid,) in left} == {1}  # the dead pid 1's claims, fresh
    start_s = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "waiting for" not in p.stdout + p.stderr  # taken over, not waited for
    assert time.monotonic() - start_s < 200
    resumed = table(store)
    assert resumed["counts"] == (RUNS, RUNS) and resumed["claims"] == 0
    assert resumed["runs"] == uninterrupted["runs"] and resumed["curves"] == uninterrupted["curves"]
