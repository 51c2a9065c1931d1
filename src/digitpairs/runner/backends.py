"""Where units train, behind one small interface, and the one loop that feeds them from the Driver.

A backend runs units and hands back their results; the Driver (runner/driver.py) claims the units, stores the runs
and ticks the progress. Backends: in this process (InProcess), in worker processes on this machine (ProcessPool),
and as Ray tasks on a cluster (runner/ray.py).
"""

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from digitpairs.base.errors import UserError
from digitpairs.runner.driver import Driver
from digitpairs.runner.units import Unit, init, interrupts_blocked, run_unit, worker_init
from digitpairs.spec import plugins

WAIT_S = 0.5  # how long the loop waits for a result before it ticks the progress again


class Backend(Protocol):
    def slots(self) -> int:
        """How many units may be in flight at once."""

    def submit(self, unit: Unit) -> object:
        """Start training the unit; a handle for its result."""

    def ready(self, handles: list, timeout: float) -> list:
        """The handles whose units have ended (successes first), waiting at most `timeout` seconds for one."""

    def result(self, handle, unit: Unit) -> tuple[dict, list] | None:
        """(code, runs) of an ended unit; None if it was lost and should be submitted again; raises its error."""

    def progress(self) -> int:
        """Epochs of rounds finished since the last call."""

    def abort(self, handles: list) -> None:
        """Stop what is in flight at once (an interrupt, a failed unit): what it was training is lost."""

    def close(self) -> None:
        """Release the backend's resources after the last unit."""


def dispatch(drv: Driver, backend: Backend) -> None:
    """Feed the backend units as the Driver claims them, each claimed just before it is submitted, and store their
    runs as they end; on any exception, abort what is in flight (what arrived is stored)."""
    pending: dict = {}
    try:
        while True:
            while len(pending) < backend.slots() and (unit := drv.take(block=not pending)) is not None:
                pending[backend.submit(unit)] = unit
            if not pending:
                break
            for handle in backend.ready(list(pending), WAIT_S):
                unit = pending.pop(handle)
                outcome = backend.result(handle, unit)
                if outcome is None:
                    pending[backend.submit(unit)] = unit
                else:
                    drv.finished(unit, *outcome)
            drv.tick(backend.progress())
            drv.check()  # claims lost while units train: stop them, not only the next one
    except BaseException:
        backend.abort(list(pending))
        raise
    finally:
        backend.close()


class InProcess:
    """One unit after another, in this process."""

    def __init__(self, drv: Driver, data_dir, threads: int):
        init(data_dir, threads, drv.tick)  # the bar moves at every epoch

    def slots(self) -> int:
        return 1

    def submit(self, unit: Unit) -> "Trained":
        return Trained(run_unit(unit))  # trained now: the handle holds its result

    def ready(self, handles: list, timeout: float) -> list:
        return handles

    def result(self, handle, unit: Unit):
        return handle.result

    def progress(self) -> int:
        return 0  # ticked as it trains

    def abort(self, handles: list) -> None:
        pass

    def close(self) -> None:
        pass


class Trained:
    """An InProcess handle: a unit's result, compared by identity."""

    def __init__(self, result: tuple[dict, list]):
        self.result = result


class ProcessPool:
    """Worker processes on this machine, `workers` units in flight. On any exception the workers are killed at once."""

    def __init__(self, drv: Driver, data_dir, workers: int, threads: int, work=run_unit):
        ctx = mp.get_context("spawn")
        self.workers, self.work, self.shown, self.aborted = workers, work, 0, False
        self.counter, lock = ctx.RawValue("q", 0), ctx.Lock()  # epochs finished by every worker together
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker_init,
                                        initargs=(data_dir, threads, self.counter, lock, os.getpid(),
                                                  tuple(plugins.loaded())))

    def slots(self) -> int:
        return self.workers

    def submit(self, unit: Unit):
        with interrupts_blocked():  # a worker started now ignores Ctrl-C and SIGTERM: the driver acts on them
            try:
                return self.pool.submit(self.work, unit)
            except BrokenProcessPool:
                raise died() from None

    def ready(self, handles: list, timeout: float) -> list:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return sorted(done, key=lambda f: f.exception() is not None)  # what succeeded is stored first

    def result(self, handle, unit: Unit):
        try:
            return handle.result()
        except BrokenProcessPool:
            raise died() from None

    def progress(self) -> int:
        value = self.counter.value  # read without the lock: the driver never waits on a worker
        n, self.shown = value - self.shown, value
        return n

    def abort(self, handles: list) -> None:
        self.aborted = True
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in mp.active_children():
            p.kill()

    def close(self) -> None:
        if not self.aborted:
            self.pool.shutdown()


def died() -> UserError:
    return UserError("a worker process died (out of memory? killed?): finished runs are in the store; run the same "
                     "command to resume, with fewer --workers")
