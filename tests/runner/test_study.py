"""The plan, the claims and the process pool's failure path, without training (digitpairs.study, digitpairs.claims)."""

import dataclasses
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time

import pytest

from digitpairs import UserError
from digitpairs.base.procfs import start_time
from digitpairs.runner import driver as driver_module
from digitpairs.runner import study
from digitpairs.runner.backends import ProcessPool, dispatch
from digitpairs.runner.driver import Driver, groups_of, plan
from digitpairs.runner.units import Unit
from digitpairs.spec.records import RunResult
from digitpairs.spec.studyfile import build
from digitpairs.store import Store
from digitpairs.store import leases as claims

G = 3  # rounds per group in these tests


def make_study(rounds=7, archs=("siamese_ws", "transfer")):
    return dataclasses.replace(build({"archs": list(archs), "rounds": rounds}, "t.toml", quick=True), name="st")


def driver(store, s, batch_rounds=G) -> Driver:
    spec = s.spec()
    for v in spec["variants"]:
        v["group_rounds"] = G
    drv = Driver(s, store, batch_rounds, by_cost=False)
    drv.plan(store.ensure_study(s.name, spec))
    drv.start()
    return drv


def results(unit: Unit) -> list[RunResult]:
    curve = [{"epoch": 1, "train_cmp": 0.1, "train_loss": 0.1, "val_acc": None, "test_acc": 0.5}]
    return [RunResult(r, r, 0.5, None, 10, 0.1, len(g), curve, 100, 200, "cpu") for g in unit.groups for r in g]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def claim_as(store, arch, first, host=claims.HOST, pid=None, age=0.0, started="now", token="another"):
    """A claim row as another process would write it (started: its process's start time; "now": as it runs)."""
    beat, pid = time.time() - age, pid or os.getppid()
    started = start_time(pid) if started == "now" else started
    store.db.execute("INSERT OR REPLACE INTO claims (study, arch, round, host, pid, started, heartbeat, proc_start, "
                     "token) VALUES ('st', ?, ?, ?, ?, ?, ?, ?, ?)", (arch, first, host, pid, beat, beat, started, token))


def test_groups_are_fixed_chunks_that_stay_when_a_study_grows():
    assert groups_of(7, 3) == [(0, 1, 2), (3, 4, 5), (6,)]
    assert groups_of(10, 3)[:2] == groups_of(7, 3)[:2]
    s = make_study(rounds=9)
    # round 6 was stored when the study had 7 rounds: its group (6, 7, 8) trains whole, as uninterrupted
    todo = plan(s, {"siamese_ws": 3, "transfer": 3}, {("siamese_ws", r) for r in range(7)})
    assert [(v.name, g) for v, g in todo if v.name == "siamese_ws"] == [("siamese_ws", (6, 7, 8))]


def test_units_are_whole_groups_up_to_batch_rounds(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    drv = driver(store, make_study(), batch_rounds=7)
    try:
        first, second = drv.take(block=False), drv.take(block=False)
        assert (first.variant.name, first.groups) == ("siamese_ws", ((0, 1, 2), (3, 4, 5)))
        assert (second.variant.name, second.groups) == ("siamese_ws", ((6,),))
        held = claims.held(store.db, "st")
        assert set(held) == {("siamese_ws", 0), ("siamese_ws", 3), ("siamese_ws", 6)}
        drv.finished(first, {"package_version": "x", "code_hash": "h", "git_commit": None, "torch_version": "t"}, results(first))
        assert set(claims.held(store.db, "st")) == {("siamese_ws", 6)}  # dropped with the stored runs
        assert store.done("st") == {("siamese_ws", r) for r in range(6)}
    finally:
        drv.close()
    assert store.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # the rest released at the end


def test_claims_of_live_processes_are_respected_and_others_taken_over(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    drv = driver(store, make_study(rounds=12, archs=("siamese_ws",)))
    claim_as(store, "siamese_ws", 0)  # a live process here (this one's parent)
    claim_as(store, "siamese_ws", 3, pid=dead_pid())  # a process here that died
    claim_as(store, "siamese_ws", 6, host="elsewhere", pid=1, age=claims.STALE_S + 1)  # stopped beating
    claim_as(store, "siamese_ws", 9, host="elsewhere", pid=1)  # another machine, beating
    try:
        taken = [drv.take(block=False), drv.take(block=False), drv.take(block=False)]
        assert [u.groups if u else None for u in taken] == [((3, 4, 5),), ((6, 7, 8),), None]
        assert claims.held(store.db, "st")[("siamese_ws", 3)] == (claims.HOST, os.getpid(), claims.TOKEN)
    finally:
        drv.close()


def test_a_process_waits_for_units_claimed_by_others_then_ends(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(driver_module, "POLL_S", 0.05)
    store = Store(tmp_path / "s.sqlite")
    drv = driver(store, make_study(rounds=3, archs=("siamese_ws",)))
    claim_as(store, "siamese_ws", 0)
    group = Unit(drv.study.variants[0], ((0, 1, 2),))

    def other_process():  # stores its runs a little later, which drops its claim
        time.sleep(0.5)
        other = Store(store.path)
        other.add_runs("st", "siamese_ws", {}, results(group), release=(0,))
        other.close()

    finisher = threading.Thread(target=other_process)
    try:
        assert drv.take(block=False) is None
        start = time.monotonic()
        finisher.start()
        assert drv.take(block=True) is None  # nothing left for this process: on to the report
        assert time.monotonic() - start >= 0.5  # it waited for the other process, not trained its group
    finally:
        finisher.join()
        drv.close()
    out = capsys.readouterr().out
    assert f"waiting for 3 runs that other processes are training (pid {os.getppid()} on {claims.HOST})" in out


def test_a_later_process_with_the_same_pid_takes_the_claims_over(tmp_path):
    """A container restarted as pid 1 (or a scheduler that reuses pids): the claims of the process that died carry
    this process's pid, and its heartbeat is fresh, but they are not this process's. Its token and start time tell
    them apart: they are taken over at once, not waited for, and this process never renews them as its own."""
    store = Store(tmp_path / "s.sqlite")
    drv = driver(store, make_study(rounds=6, archs=("siamese_ws",)))
    claim_as(store, "siamese_ws", 0, pid=os.getpid(), started="1")  # the dead process, same pid, started before
    claim_as(store, "siamese_ws", 3, pid=os.getpid(), started=None, token=None)  # as 0.2 wrote it: pid alone
    try:
        now = time.time()
        assert not claims.live(claims.HOST, os.getpid(), now, now, "1")
        assert claims.live(claims.HOST, os.getpid(), now, now, start_time(os.getpid()))
        unit = drv.take(block=False)
        assert unit.groups == ((0, 1, 2),)  # the dead one's claim, taken over (0.2's: alive by its pid)
        assert claims.held(store.db, "st")[("siamese_ws", 0)] == (claims.HOST, os.getpid(), claims.TOKEN)
    finally:
        drv.close()
    left = store.db.execute("SELECT round, token FROM claims").fetchall()
    assert left == [(3, None)]  # released by token: the row this process did not write stays


def test_a_lost_heartbeat_stops_the_process_at_its_next_unit(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    drv = driver(store, make_study(rounds=6, archs=("siamese_ws",)))
    try:
        assert drv.take(block=False) is not None
        drv.heartbeat.lost = "disk I/O error, for 31 s"
        with pytest.raises(UserError, match=r"could not renew its claims .*disk I/O error, for 31 s.* it stops"):
            drv.take(block=False)
    finally:
        drv.close()


def test_a_worker_process_keeps_freed_memory_for_reuse():
    """A study's worker process (units.worker_init) keeps freed memory, where glibc's mallopt is; the process set-up
    every backend shares (units.init: in-process, Ray) does not, so a process that imports digitpairs keeps its
    allocator as it was (a subprocess here, so that the tests' own does)."""
    import platform
    import textwrap
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    code = textwrap.dedent("""
        import os
        from unittest import mock
        from digitpairs.runner import units
        calls = []
        with mock.patch.object(units, "keep_freed_memory", lambda: calls.append("kept")):
            units.init(None, 1, arrays={})
            print(len(calls))  # 0: init leaves the allocator alone
            with mock.patch.object(units, "init", lambda *a: None):
                units.worker_init(None, 1, None, None, os.getppid())
            print(len(calls))  # 1: a worker keeps freed memory
        from digitpairs.base.procfs import keep_freed_memory
        print(keep_freed_memory())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["0", "1", str(glibc)]


def test_pid_alive_and_live():
    assert claims.pid_alive(os.getpid()) and not claims.pid_alive(dead_pid())
    now = time.time()
    assert claims.live("elsewhere", 1, now, now) and not claims.live("elsewhere", 1, now - claims.STALE_S, now)
    assert not claims.live(claims.HOST, dead_pid(), now, now)


def fail_or_sleep(unit: Unit):
    """A worker's unit in the failure test: round 0's unit fails soon, every other one would take a minute."""
    if unit.rounds[0] == 0:
        time.sleep(0.5)
        raise UserError("round 0 failed")
    time.sleep(60)
    return {}, results(unit)


@pytest.mark.slow
def test_a_failed_unit_ends_the_pool_at_once(tmp_path, real_data_dir):
    store = Store(tmp_path / "s.sqlite")
    drv = driver(store, make_study(rounds=6, archs=("siamese_ws",)))
    start = time.monotonic()
    try:
        with pytest.raises(UserError, match="round 0 failed"):
            dispatch(drv, ProcessPool(drv, real_data_dir, 2, 1, work=fail_or_sleep))
    finally:
        drv.close()
    assert time.monotonic() - start < 30  # not the other unit's minute (spawning two workers takes seconds)
    time.sleep(0.2)
    assert mp.active_children() == []
    assert store.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_a_study_recorded_meanwhile_by_another_process_keeps_its_grouping(tmp_path, monkeypatch):
    """Between this process's check and its record (the data's fetch), another one records the study with group
    sizes of its own (another device): this one trains in the stored groups, not in those it computed."""
    s = make_study(rounds=4, archs=("siamese_ws",))
    store = Store(tmp_path / "s.sqlite")
    seen = {}

    def fetch_while_another_records(data_dir, log):
        spec = s.spec()
        spec["variants"][0]["group_rounds"] = 5  # not what this process computes for the CPU
        other = Store(store.path)
        other.ensure_study(s.name, spec)
        other.close()

    monkeypatch.setattr(study.mnist, "fetch", fetch_while_another_records)
    monkeypatch.setattr(study, "backend_for", lambda *args: None)
    monkeypatch.setattr(study, "dispatch", lambda drv, backend: seen.update(drv.sizes))
    study.run_study(s, store, None, workers=1)
    store.close()
    assert seen == {"siamese_ws": 5}


def test_two_stores_in_one_folder_never_share_a_checkpoint(tmp_path):
    s = make_study(rounds=3, archs=("siamese_ws",))
    cpu, gpu = Store(tmp_path / "cpu.sqlite"), Store(tmp_path / "gpu.sqlite")
    drivers = [driver(cpu, s), driver(gpu, s)]
    try:
        folders = [d.checkpoints(s.variants[0]).folder for d in drivers]
        assert folders[0] != folders[1] and all(f.is_relative_to(tmp_path / "checkpoints") for f in folders)
        assert [f.relative_to(tmp_path / "checkpoints").parts[0] for f in folders] == ["cpu.sqlite", "gpu.sqlite"]
    finally:
        for d in drivers:
            d.close()


def test_a_unit_whose_checkpoint_folder_is_not_on_its_node_trains_without_checkpoints(tmp_path, capsys):
    """A Ray node that does not share the driver's storage has no store folder: the unit trains without checkpoints
    (a lost unit restarts), instead of failing on a folder it cannot make."""
    from digitpairs.engine.checkpoint import Checkpoints
    from digitpairs.runner.units import on_this_machine

    v = make_study(rounds=3, archs=("siamese_ws",)).variants[0]
    here = Unit(v, ((0, 1, 2),), Checkpoints(tmp_path / "checkpoints" / "s.sqlite" / "st" / v.name, 1,
                                             tmp_path / "checkpoints"))
    elsewhere = Unit(v, ((0, 1, 2),), Checkpoints(tmp_path / "gone" / "checkpoints" / "s.sqlite" / "st" / v.name, 1,
                                                  tmp_path / "gone" / "checkpoints"))
    assert on_this_machine(here) == here
    assert on_this_machine(elsewhere).checkpoints is None and not (tmp_path / "gone").exists()
    assert "training without checkpoints" in capsys.readouterr().err
