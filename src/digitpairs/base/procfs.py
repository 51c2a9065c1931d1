"""This machine's CPU and processes, read from /proc where there is one (Linux), with portable fallbacks."""

import os
import platform
import secrets
import socket
from pathlib import Path

HOST = socket.gethostname()
TOKEN = secrets.token_hex(8)  # this process's own, made when it starts: what it writes is told apart by it


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
