"""Leases on work: which process trains which group of rounds now, so that processes sharing one store share its
work.

A process claims a unit's groups in the store (the table `claims`, store/schema.py: study, variant, the group's
first round -> host, pid, the process's start time, a token of its own, started, heartbeat) in the same short
transaction that finds them unclaimed, just before it trains them, and a thread renews its heartbeat. The claim goes
when the group's runs are stored (in their transaction) or when the process ends.

A claim belongs to one process, named by its token (random, made when the process starts): the process renews and
releases its claims by their token, never by its pid, so a later process with the same pid (a container restarted
as pid 1, a scheduler that reuses pids) never takes them for its own. A claim is alive while it was renewed within
STALE_S and, on this host, its process runs: the pid is alive and started when the claim says. Anything else
is free to take over.
"""

import os
import sqlite3
import threading
import time

from digitpairs.base.procfs import HOST, TOKEN, pid_alive, start_time

HEARTBEAT_S = 5.0  # how often a process renews its claims
STALE_S = 60.0  # a claim not renewed for this long is taken over (its holder hung, or its machine went away)
STARTED = start_time("self")  # when this process started (None without /proc; "self": also in a pid namespace
#                                without a /proc of its own, where /proc/PID would be another process's)


def live(host: str, pid: int, heartbeat: float, now: float, started: str | None = None) -> bool:
    """Whether a claim still holds: renewed within STALE_S and, on this host, its process alive and, where the
    claim recorded it (claims of 0.2 did not), started when the claim says."""
    if now - heartbeat >= STALE_S:
        return False
    if host != HOST:
        return True
    now_started = start_time(pid) if started is not None else None
    return pid_alive(pid) and (now_started is None or now_started == started)  # a start time not readable: alive


def held(db: sqlite3.Connection, study: str) -> dict[tuple[str, int], tuple[str, int, str | None]]:
    """The live claims of a study, this process's own included: {(variant, first round): (host, pid, token)}."""
    now = time.time()
    rows = db.execute("SELECT arch, round, host, pid, heartbeat, proc_start, token FROM claims WHERE study = ?",
                      (study,))
    return {(arch, first): (host, pid, token) for arch, first, host, pid, beat, started, token in rows
            if live(host, pid, beat, now, started)}


def claim(db: sqlite3.Connection, study: str, arch: str, firsts: list[int]) -> None:
    """Claim these groups for this process (inside the caller's transaction; stale claims are replaced)."""
    now = time.time()
    db.executemany("INSERT OR REPLACE INTO claims (study, arch, round, host, pid, started, heartbeat, proc_start, "
                   "token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(study, arch, first, HOST, os.getpid(), now, now, STARTED, TOKEN) for first in firsts])


def release_all(path, study: str) -> None:
    """Drop every claim of this process on the study (at its end, however it ends); waits at most 1 s for the lock:
    a claim left behind is taken over anyway, its holder being dead."""
    try:
        db = sqlite3.connect(path, timeout=1.0, isolation_level=None)
        try:
            db.execute("DELETE FROM claims WHERE study = ? AND token = ?", (study, TOKEN))
        finally:
            db.close()
    except sqlite3.Error:
        pass


def holders(claims: dict[tuple[str, int], tuple[str, int, str | None]]) -> str:
    """'pid 12 on host-a, pid 40 on host-b' for the holders of some claims, this process left out."""
    others = sorted({(host, pid) for host, pid, token in claims.values() if token != TOKEN})
    return ", ".join(f"pid {pid} on {host}" for host, pid in others)


class Heartbeat:
    """A thread that renews this process's claims on a study every HEARTBEAT_S, on its own connection. Where it
    cannot for STALE_S / 2 (the store's file gone, a disk that fails), other processes will soon take the claims over:
    `lost` then says why, and the driver stops at its next unit (runner/driver.py)."""

    def __init__(self, path, study: str):
        self.path, self.study, self.stop = path, study, threading.Event()
        self.lost: str | None = None  # why the claims could not be renewed, once that has lasted STALE_S / 2
        self.thread = threading.Thread(target=self._run, name="digitpairs-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        renewed, why = time.monotonic(), ""
        db = None
        try:
            while not self.stop.wait(HEARTBEAT_S):
                try:
                    db = db or sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
                    db.execute("UPDATE claims SET heartbeat = ? WHERE study = ? AND token = ?",
                               (time.time(), self.study, TOKEN))
                    renewed = time.monotonic()
                except sqlite3.Error as e:  # busy: the next beat will do (STALE_S is many beats); else it lasts
                    why = str(e)
                    if time.monotonic() - renewed > STALE_S / 2:
                        self.lost = f"{why}, for {time.monotonic() - renewed:.0f} s"
        finally:
            if db is not None:
                db.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2.0)
