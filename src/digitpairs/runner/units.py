"""A unit of work and how a process trains it: the same code in the driver, in worker processes and in Ray tasks.

A unit is one or more whole groups of one variant's rounds (runner/driver.py), trained by one call of the engine.
"""

import ctypes
import dataclasses
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from digitpairs.base.files import probe
from digitpairs.base.procfs import HOST, keep_freed_memory
from digitpairs.data import mnist
from digitpairs.data.pairs import round_for
from digitpairs.engine import train
from digitpairs.engine.checkpoint import Checkpoints, in_folder
from digitpairs.spec import plugins
from digitpairs.spec.provenance import code_version
from digitpairs.spec.records import RunResult
from digitpairs.spec.studyfile import Variant


@dataclass(frozen=True)
class Unit:
    variant: Variant
    groups: tuple[tuple[int, ...], ...]  # whole groups of the study's grouping, each consecutive rounds
    checkpoints: Checkpoints | None = None  # where its groups save their state as they train (None: nowhere)

    @property
    def rounds(self) -> tuple[int, ...]:
        return tuple(r for g in self.groups for r in g)


_DATA: dict = {}  # per process: the MNIST arrays and the progress callback


def init(data_dir, threads: int, progress=None, arrays: dict | None = None) -> None:
    """A process's set-up before its units: its threads, MNIST from the verified cache or the arrays given (Ray)."""
    torch.set_num_threads(threads)
    _DATA.clear()
    _DATA["mnist"] = arrays if arrays is not None else mnist.load(data_dir, log=lambda *a: None)
    _DATA["progress"] = progress  # progress(n): n rounds finished an epoch


def on_this_machine(unit: Unit) -> Unit:
    """The unit, without checkpoints where the folder they go in is not on this machine (a Ray node that does not
    share the driver's storage: the store's folder is not there): it then trains without them, and a lost unit
    restarts from its first epoch."""
    ckpt = unit.checkpoints
    if ckpt is None or ckpt.root is None:
        return unit
    if ckpt.root.parent.is_dir():
        try:
            in_folder(ckpt.folder, lambda: probe(ckpt.folder))
            return unit
        except OSError:  # there, but not writable from this node
            pass
    print(f"{unit.variant.name} rounds {list(unit.rounds)}: no {ckpt.root.parent} on {HOST} (no shared storage): "
          "training without checkpoints", file=sys.stderr, flush=True)
    return dataclasses.replace(unit, checkpoints=None)


def run_unit(unit: Unit) -> tuple[dict, list[RunResult]]:
    """Train a unit in its groups; return the code that trained it (spec/provenance.py) and its runs."""
    v, rounds = unit.variant, list(unit.rounds)
    # rounds drawn again for each unit (tens of ms; keeping them would cost memory per worker)
    results = train(v.arch, v.cfg, (round_for(_DATA["mnist"], v.cfg, r) for r in rounds), rounds,
                    [v.cfg.seed + r for r in rounds], on_epoch=_DATA["progress"], groups=[len(g) for g in unit.groups],
                    checkpoints=unit.checkpoints)
    return code_version(), results


# --- worker processes on this machine: the driver alone acts on an interrupt, and ends them ---
def die_with_parent(parent: int) -> None:
    """Linux: end this process when the driver dies, so that `kill -9` of the driver leaves no worker computing."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when they next talk to the dead driver
        return
    if os.getppid() != parent:  # the driver died before the line above
        os._exit(1)


INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def interrupts_blocked():
    """A worker started in here begins with SIGINT and SIGTERM blocked (the mask survives exec) until its set-up
    ignores them: Ctrl-C reaches the whole process group, and only the driver acts on it (it ends the workers).
    A signal that arrives meanwhile is held, not lost: the driver gets it on leaving."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def worker_init(data_dir, threads: int, counter, lock, parent: int, sources: tuple = ()) -> None:
    """A worker process's set-up: interrupts ignored, its end tied to the driver's, freed memory kept for reuse
    (base.procfs: the process is the study's own), progress into `counter`, and the driver's plugins loaded before
    any unit is read (its networks of yours are pickled by reference)."""
    for sig in INTERRUPTS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)
    die_with_parent(parent)
    keep_freed_memory()
    plugins.load_installed()
    plugins.load_all(sources)

    def tick(n: int) -> None:  # the driver reads the counter without the lock: it never waits on a worker
        with lock:
            counter.value += n

    init(data_dir, threads, tick)
