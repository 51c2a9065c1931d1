"""Checkpoints of a group in training: everything that decides its next epoch, so that a resumed group continues
bit for bit where it stopped (on the same machine and device, with the same run options: a resume with another
--cuda-graphs or --matmul-conv continues from the same state, its numbers then differing to rounding).

One file per group, `DIR/group-FIRSTROUND.pt`, replaced atomically: written beside it under a name of this
process's own (host, pid and token), synced to the disk, renamed over it, and the folder synced: a kill or a power
cut at any moment leaves the previous complete epoch. A process deletes only its own temporary files, and those
a process of this host left when it died during a save (or any left for an hour). It holds the parameters and BatchNorm statistics, Adam's state, the
learning-rate schedule, every member's random generator (data order, augmentation, dropout) and the curves so far,
with the key of what it belongs to (architecture, rounds, seeds, config): a file whose key differs is ignored.
The file: MAGIC, the SHA-256 of the payload, the payload (torch.save of the state, loaded with weights_only=True:
tensors and plain data, never code). A damaged file (digest or contents wrong, empty, cut short) is ignored with a
line on stderr: the group starts afresh exactly as without it (checked before anything is restored, put back if a
restore fails).

A checkpoint written on another device resumes here: the state is moved to this device and Adam keeps this
device's implementation (engine.training.optimizer), the numbers then differing from an uninterrupted run
to rounding, as any change of device makes them.
"""

import copy
import hashlib
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from digitpairs.base.errors import first_line
from digitpairs.base.files import sync_folder
from digitpairs.base.procfs import HOST, TOKEN, pid_alive

MAGIC = b"digitpairs checkpoint, sha256\n"
OLDER = b"PK"  # a file of the format before MAGIC (torch.save's zip): ignored like another group's
LEFT_S = 3600  # a temporary file untouched this long was left by a process that died during a save
OPTIMIZER_IMPLEMENTATION = {"fused", "foreach", "capturable", "differentiable"}  # how Adam runs, not its state


@dataclass(frozen=True)
class Checkpoints:
    folder: Path  # one folder per variant of a study (runner/driver.py: beside the store, named after it)
    every: int = 1  # save after every `every` epochs (and never if 0)
    root: Path | None = None  # the folder up to which remove() takes empty folders away (default: folder's grandparent)

    def path(self, rounds: list[int]) -> Path:
        return self.folder / f"group-{rounds[0]}.pt"

    def save(self, rounds: list[int], key: dict, epoch: int, net, opt, sched, curves: list[list[dict]]) -> None:
        if not self.every or epoch % self.every:
            return
        _write(self.path(rounds), {"key": key, "epoch": epoch, **_state(net, opt, sched), "curves": curves})

    def remove(self, rounds: list[int]) -> None:
        """Delete the group's checkpoint, this process's temporary files of it (and those left for an hour by a
        process that died), and the folders up to the root once they are empty."""
        path = self.path(rounds)
        path.unlink(missing_ok=True)
        for tmp in self.folder.glob(f".{path.name}.*.tmp"):
            try:
                if tmp == temporary(path) or left(tmp, path) or time.time() - tmp.stat().st_mtime > LEFT_S:
                    tmp.unlink()
            except OSError:  # gone meanwhile
                pass
        root, folder = self.root or self.folder.parent.parent, self.folder
        while True:
            try:
                folder.rmdir()
            except OSError:  # not empty (another group's file), or gone
                return
            if folder == root or folder.parent == folder:
                return
            folder = folder.parent

    def load(self, rounds: list[int], key: dict, net, opt, sched) -> tuple[int, list[list[dict]]]:
        """Restore the group from its checkpoint; return (epochs done, curves so far), or (0, fresh curves) with
        the group unchanged where there is none, it is another group's, or it is damaged."""
        fresh, path, before = (0, [[] for _ in rounds]), self.path(rounds), None
        if not path.is_file():
            return fresh
        try:
            state = _read(path, next(net.parameters()).device)
            if state is None or state.get("key") != key:  # an older format, or another group's or code's
                return fresh
            _check(state, rounds, net, opt, sched)
            before = copy.deepcopy(_state(net, opt, sched))  # put back if a restore fails midway
            _restore(state, net, opt, sched)
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint only costs the epochs it held
            if before is not None:
                _restore(before, net, opt, sched)
            why = f"{type(e).__name__}: {first_line(e)}"
            print(f"{self.folder.name} rounds {rounds}: the checkpoint {path.name} is damaged ({why}) and ignored: "
                  "training from the start", file=sys.stderr, flush=True)
            return fresh
        print(f"{self.folder.name} rounds {rounds}: resuming from the checkpoint of epoch {state['epoch']}",
              file=sys.stderr, flush=True)
        return state["epoch"], state["curves"]


def in_folder(folder: Path, make, tries: int = 5):
    """make() (which creates a file in folder) after making the folder and its parents. Another group's or
    process's remove() may take a folder away while it is still empty, before the file is in it: then both are made
    again (once the file is there, the folder is not empty and stays)."""
    for attempt in range(tries):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return make()
        except FileNotFoundError:
            if attempt == tries - 1:
                raise


def temporary(path: Path) -> Path:
    """This process's temporary file for path: no other process, on this host or another, writes or deletes it."""
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{TOKEN}.tmp")


def left(tmp: Path, path: Path) -> bool:
    """Whether a temporary file was left by a process of this host that has died (a worker killed during a save)."""
    parts = tmp.name.removeprefix(f".{path.name}.").removesuffix(".tmp").rsplit(".", 2)  # host (dots and all), pid,
    if len(parts) != 3:  # token
        return False
    host, pid, _ = parts
    return host == HOST and pid.isdigit() and not pid_alive(int(pid))


def _write(path: Path, state: dict) -> None:
    """MAGIC, the payload's SHA-256 and the payload, written beside the file (its folder made), synced, renamed
    over it, and the folder synced."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    tmp = temporary(path)

    def write():
        with open(tmp, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).digest())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())

    in_folder(path.parent, write)
    os.replace(tmp, path)
    sync_folder(path.parent)


def _read(path: Path, device) -> dict | None:
    """The state in the file; None if it is of the older format; ValueError if it is not a whole checkpoint or its
    digest does not match."""
    data = path.read_bytes()
    if data.startswith(OLDER):
        return None
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 32:
        raise ValueError(f"{len(data)} bytes that do not start as a checkpoint (cut short by a crash?)")
    start = len(MAGIC) + 32  # of the payload, after its SHA-256
    if hashlib.sha256(data[start:]).digest() != data[len(MAGIC):start]:
        raise ValueError("its SHA-256 does not match its contents")
    return torch.load(io.BytesIO(data[start:]), map_location=device, weights_only=True)


def _check(state: dict, rounds: list[int], net, opt, sched) -> None:
    """ValueError where the state does not fit the group (checked before anything is restored)."""
    epoch, curves, rngs, now = state["epoch"], state["curves"], state["rngs"], [g.get_state() for g in net.rngs]
    checks = {
        "parameters": lambda: _fits(state["net"], net.state_dict()),
        "epoch": lambda: type(epoch) is int and epoch >= 1,
        "curves": lambda: isinstance(curves, list) and len(curves) == len(rounds) and all(
            isinstance(c, list) and [e["epoch"] for e in c] == list(range(1, epoch + 1)) for c in curves),
        "random generators": lambda: isinstance(rngs, list) and len(rngs) == len(now) and all(
            isinstance(s, torch.Tensor) and s.dtype == n.dtype and s.shape == n.shape for s, n in zip(rngs, now)),
        "optimizer state": lambda: _fits_opt(state["opt"], opt),
        "schedule": lambda: state["sched"] is None if sched is None else _alike(state["sched"], sched.state_dict())}
    for what, ok in checks.items():
        if not ok():
            raise ValueError(f"wrong {what}")


def _state(net, opt, sched) -> dict:
    """What decides the group's next epoch: the model's, Adam's, the schedule's and the generators' states."""
    return {"net": net.state_dict(), "opt": opt.state_dict(), "rngs": [g.get_state() for g in net.rngs],
            "sched": sched.state_dict() if sched is not None else None}


def _restore(state: dict, net, opt, sched) -> None:
    net.load_state_dict(state["net"])
    implementation = [{k: g[k] for k in OPTIMIZER_IMPLEMENTATION if k in g} for g in opt.param_groups]
    opt.load_state_dict(state["opt"])
    for group, keep in zip(opt.param_groups, implementation):  # this device's Adam, whichever wrote the state
        group.update(keep)
    if sched is not None:
        sched.load_state_dict(state["sched"])
    for g, s in zip(net.rngs, state["rngs"], strict=True):
        g.set_state(s.cpu())


def _fits(saved: dict, current: dict) -> bool:
    """The saved tensors have the current model's names, shapes and types."""
    return (isinstance(saved, dict) and saved.keys() == current.keys()
            and all(isinstance(t := saved[k], torch.Tensor) and t.shape == current[k].shape
                    and t.dtype == current[k].dtype for k in current))


def _fits_opt(saved: dict, opt) -> bool:
    """The optimizer's groups, with their settings and parameter counts, and each parameter's state its shape."""
    groups, params = saved["param_groups"], [p for g in opt.param_groups for p in g["params"]]
    if not (isinstance(groups, list) and len(groups) == len(opt.param_groups) and isinstance(saved["state"], dict)
            and all(_alike(g, h, OPTIMIZER_IMPLEMENTATION) and len(g["params"]) == len(h["params"])
                    for g, h in zip(groups, opt.param_groups))):
        return False
    of = dict(zip((i for g in groups for i in g["params"]), params))  # saved id -> parameter
    return all(i in of and isinstance(s, dict) and all(isinstance(t, torch.Tensor) and t.shape in ((), of[i].shape)
                                                     for t in s.values()) for i, s in saved["state"].items())


def _alike(saved: dict, current: dict, besides: set = frozenset()) -> bool:
    """The same keys, each value of the same type (but for the keys `besides`)."""
    return (isinstance(saved, dict) and saved.keys() == current.keys()
            and all(type(saved[k]) is type(current[k]) for k in current if k not in besides))
