"""This machine's CPU and processes, read from /proc where there is one (Linux), with portable fallbacks; and how
a process that trains keeps its memory."""

import ctypes
import os
import platform
import secrets
import socket
from pathlib import Path

HOST = socket.gethostname()
TOKEN = secrets.token_hex(8)  # this process's own, made when it starts: what it writes is told apart by it


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)


def keep_freed_memory() -> bool:
    """Where the C library has glibc's mallopt: memory this process frees kept for its reuse, not given back to the
    system; whether it applied. PyTorch's CPU tensors come from malloc, and glibc maps a large block afresh and trims
    its heap's free top, so a training step faulted many of its pages in again, step after step (hundreds to
    thousands of page faults a step: docs/benchmarks.md). Blocks under 32 MiB (glibc's largest threshold on 64
    bits) then come from the heap, trimmed only above 1 GiB free: the process keeps its peak memory. The worker processes a study starts call it (runner/units.py), never a process that imports digitpairs;
    a preloaded allocator (jemalloc, tcmalloc) ignores it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no such C library (macOS, Windows)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC ..."), else the platform's processor or machine name."""
    for line in cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def cpuinfo() -> str:
    """The text of /proc/cpuinfo, or "" where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (state, ppid, ...), or None: no such process, or no
    /proc. The name is in parentheses and may hold spaces and parentheses itself, so it is cut at the last ')'."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int | str) -> str | None:
    """When the process with this pid started (clock ticks since the machine booted), or None where it cannot be
    told (no such process, no /proc). With the pid it names one process: a pid reused by a later process, such as a
    container's pid 1 after a restart, has another start time."""
    fields = stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (a zombie, killed but not yet reaped, is dead)."""
    fields = stat(pid)
    if fields is not None:
        return fields[0] != "Z"
    try:  # not in /proc (gone, hidden from this user by hidepid, or no /proc): ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        fields = stat(int(entry))
        if fields is None or len(fields) < 2:  # not a process, or one that ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out
