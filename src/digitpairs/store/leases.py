"""Leases on work: which process trains which group of rounds now, so that processes sharing one store share its
work.

A process claims a unit's groups in the store (the table `claims`, store/schema.py: study, variant, the group's
first round -> host, pid, started, heartbeat) in the same short transaction that finds them unclaimed, just before it trains them, and a
thread renews its heartbeat. The claim goes when the group's runs are stored (in their transaction) or when the
process ends. A claim whose holder is dead (same host, its pid gone) or whose heartbeat is older than STALE_S (any
host: a machine that went away) is free to take over.
"""

import os
import socket
import sqlite3
import threading
import time

from digitpairs.base.procfs import pid_alive

HEARTBEAT_S = 5.0  # how often a process renews its claims
STALE_S = 60.0  # a claim not renewed for this long is taken over (its holder hung, or its machine went away)
HOST = socket.gethostname()


def live(host: str, pid: int, heartbeat: float, now: float) -> bool:
    """Whether a claim still holds: renewed within STALE_S and, on this machine, its process alive."""
    return now - heartbeat < STALE_S and (host != HOST or pid_alive(pid))


def held(db: sqlite3.Connection, study: str) -> dict[tuple[str, int], tuple[str, int]]:
    """The live claims of a study, this process's own included: {(variant, first round): (host, pid)}."""
    now = time.time()
    rows = db.execute("SELECT arch, round, host, pid, heartbeat FROM claims WHERE study = ?", (study,))
    return {(arch, first): (host, pid) for arch, first, host, pid, beat in rows if live(host, pid, beat, now)}


def claim(db: sqlite3.Connection, study: str, arch: str, firsts: list[int]) -> None:
    """Claim these groups for this process (inside the caller's transaction; stale claims are replaced)."""
    now = time.time()
    db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [(study, arch, first, HOST, os.getpid(), now, now) for first in firsts])


def release_all(path, study: str) -> None:
    """Drop every claim of this process on the study (at its end, however it ends); waits at most 1 s for the lock:
    a claim left behind is taken over anyway, its holder being dead."""
    try:
        db = sqlite3.connect(path, timeout=1.0, isolation_level=None)
        try:
            db.execute("DELETE FROM claims WHERE study = ? AND host = ? AND pid = ?", (study, HOST, os.getpid()))
        finally:
            db.close()
    except sqlite3.Error:
        pass


def holders(claims: dict[tuple[str, int], tuple[str, int]]) -> str:
    """'pid 12 on host-a, pid 40 on host-b' for the holders of some claims, this process left out."""
    others = sorted({c for c in claims.values() if c != (HOST, os.getpid())})
    return ", ".join(f"pid {pid} on {host}" for host, pid in others)


class Heartbeat:
    """A thread that renews this process's claims on a study every HEARTBEAT_S, on its own connection."""

    def __init__(self, path, study: str):
        self.path, self.study, self.stop = path, study, threading.Event()
        self.thread = threading.Thread(target=self._run, name="digitpairs-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
        try:
            while not self.stop.wait(HEARTBEAT_S):
                try:
                    db.execute("UPDATE claims SET heartbeat = ? WHERE study = ? AND host = ? AND pid = ?",
                               (time.time(), self.study, HOST, os.getpid()))
                except sqlite3.Error:  # busy: the next beat will do (STALE_S is many beats)
                    pass
        finally:
            db.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2.0)
