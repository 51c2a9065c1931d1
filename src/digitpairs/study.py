"""Running a study: the plan (variant x round) from what the store lacks, units of work, resuming.

A unit is one variant's missing rounds (up to `batch_rounds` of them), trained by one call of the engine.
Round r has seed `cfg.seed + r`; every variant of round r trains on the same pairs.
"""

import multiprocessing as mp
import os
import queue
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing.managers import SyncManager
from pathlib import Path

import torch
from tqdm import tqdm

from digitpairs import UserError, mnist
from digitpairs.models import create_model
from digitpairs.pairs import round_for
from digitpairs.store import Store
from digitpairs.studyfile import Study, Variant
from digitpairs.train import RunResult, train


@dataclass(frozen=True)
class Unit:
    variant: Variant
    rounds: tuple[int, ...]


def plan(study: Study, done: set[tuple[str, int]], batch_rounds: int) -> list[Unit]:
    """The units still to train, variant by variant, in round order."""
    units = []
    for v in study.variants:
        todo = [r for r in range(study.rounds) if (v.name, r) not in done]
        units += [Unit(v, tuple(todo[i:i + batch_rounds])) for i in range(0, len(todo), batch_rounds)]
    return units


def cost(unit: Unit) -> float:
    """The unit's training work in FLOPs (forward, per pair, times pairs, epochs, rounds and members)."""
    c = unit.variant.cfg
    return create_model(unit.variant.arch, c).flops_per_pair() * c.n_pairs * c.epochs * c.members * len(unit.rounds)


def run_config(v: Variant) -> dict:
    """What a stored run records as its config: the resolved Config, the Arch and the sweep point."""
    return {"config": v.cfg.to_dict(), "arch": v.arch.to_dict(), "sweep": dict(v.sweep)}


# --- the work itself: the same code in the driver (workers=1) and in worker processes ---
_DATA: dict = {}  # per process: the MNIST arrays and the progress queue


def _die_with_parent(parent: int) -> None:
    """Linux: end this process when the driver dies, so that `kill -9` of the driver leaves no worker computing."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when they next talk to the dead driver
        return
    if os.getppid() != parent:  # the driver died before the line above
        os._exit(1)


def _init(data_dir, threads: int, progress, parent: int | None = None, arrays: dict | None = None) -> None:
    """A process's set-up before its units: MNIST from the verified cache, or the arrays given (Ray)."""
    if parent is not None:
        _die_with_parent(parent)
    torch.set_num_threads(threads)
    _DATA.clear()
    _DATA["mnist"] = arrays if arrays is not None else mnist.load(data_dir, log=lambda *a: None)
    _DATA["progress"] = progress


def run_unit(unit: Unit) -> list[RunResult]:
    progress = _DATA.get("progress")
    tick = progress.put if progress is not None else None  # n rounds finished an epoch
    v = unit.variant
    # rounds drawn again for each unit (tens of ms; keeping them would cost memory per worker)
    return train(v.arch, v.cfg, (round_for(_DATA["mnist"], v.cfg, r) for r in unit.rounds), list(unit.rounds),
                 [v.cfg.seed + r for r in unit.rounds], on_epoch=tick)


def run_study(study: Study, store: Store, data_dir: Path | None, workers: int = 1, threads: int | None = None,
              batch_rounds: int = 10, log=print, backend: str = "local", address: str | None = None) -> int:
    """Train what the store lacks; return the number of runs trained now.

    backend "local": `workers` processes on this machine. "ray": each unit is a Ray task on the cluster at
    `address` (None: a Ray instance started here); the driver writes every result into the store."""
    store.ensure_study(study.name, study.spec())
    units = plan(study, store.done(study.name), batch_rounds)
    n_runs = sum(len(u.rounds) for u in units)
    if not units:
        log(f"study {study.name!r}: all {len(study.variants) * study.rounds} runs are already in {store.path}")
        return 0
    if workers > 1 or backend == "ray":  # longest first, so that no long unit is left to run alone at the end
        units.sort(key=cost, reverse=True)
    mnist.fetch(data_dir, log)  # once, in the driver, so that workers only read the verified cache
    workers = min(workers, len(units))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    epochs = sum(len(u.rounds) * u.variant.cfg.epochs for u in units)
    bar = tqdm(total=epochs, unit="epoch", desc=f"{study.name}: {n_runs} runs", leave=True, dynamic_ncols=True,
               smoothing=0.05, mininterval=0.1 if sys.stderr.isatty() else 30)

    def finished(unit: Unit, results: list[RunResult]) -> None:
        store.add_runs(study.name, unit.variant.name, run_config(unit.variant), results)
        for r in results:
            bar.write(f"{unit.variant.name:<28} round {r.round:>2}  test acc {r.test_acc:.4f}  ({r.wall_s:.1f} s/run)")

    if backend == "ray":
        try:
            _run_ray(units, data_dir, threads or 1, address, finished, bar)
        finally:
            bar.close()
        return n_runs
    if workers == 1:
        _init(data_dir, threads, _Ticker(bar))
        try:
            for unit in units:
                finished(unit, run_unit(unit))
        finally:
            bar.close()
        return n_runs
    ctx = mp.get_context("spawn")
    manager = SyncManager(ctx=ctx)
    manager.start(_die_with_parent, (os.getpid(),))
    with manager:
        progress = manager.Queue()
        stop = threading.Event()
        pump = threading.Thread(target=_pump, args=(progress, bar, stop), daemon=True)
        pump.start()
        try:
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                                     initargs=(data_dir, threads, progress, os.getpid())) as pool:
                pending = {pool.submit(run_unit, u): u for u in units}
                while pending:
                    ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in ready:
                        finished(pending.pop(fut), fut.result())
        finally:
            stop.set()
            pump.join()
            bar.close()
    return n_runs


class _Ticker:
    """A stand-in for the progress queue in the driver's own process."""

    def __init__(self, bar):
        self.bar = bar

    def put(self, n):
        self.bar.update(n)


def _pump(progress, bar, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            bar.update(progress.get(timeout=0.2))
        except queue.Empty:
            pass
        except (EOFError, OSError):  # the manager went away
            return


# --- the Ray backend: imported only when asked for (the extra digitpairs[ray]) ---
RAY_RESUBMITS = 3  # resubmissions of a unit lost with its node or worker (the driver resubmits, not Ray)


def _ray_unit(unit: Unit, arrays: dict, threads: int) -> list[RunResult]:
    """A unit on a Ray worker: MNIST comes from the driver's verified copy through the object store."""
    _init(None, threads, None, arrays=arrays)
    return run_unit(unit)


def _run_ray(units: list[Unit], data_dir, threads: int, address: str | None, finished, bar) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting unless the user turned it on
    if not address:  # a Ray instance of this command's own: single-node, on loopback only (read when Ray loads)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray.exceptions import RayError, RayTaskError
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'digitpairs[ray]'") from None
    try:
        if address:
            ray.init(address=address, logging_level="WARNING")
        else:
            ray.init(include_dashboard=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot reach the Ray cluster at {address or 'a new local instance'} ({first}): start "
                        "it with `ray start --head` or pass --address HOST:PORT") from None
    try:
        arrays = ray.put(mnist.load(data_dir, log=lambda *a: None))  # verified by the driver, shared by reference
        task = ray.remote(num_cpus=threads, max_retries=0)(_ray_unit)
        pending = {task.remote(u, arrays, threads): (u, 0) for u in units}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit, tries = pending.pop(ready[0])
            try:
                results = ray.get(ready[0])
            except RayTaskError as e:  # the unit itself failed: the same error as on this machine
                cause = getattr(e, "cause", None)
                raise cause if isinstance(cause, UserError) else e
            except RayError as e:  # lost with its node or worker: train it again
                if tries >= RAY_RESUBMITS:
                    raise UserError(f"{unit.variant.name} rounds {list(unit.rounds)} were lost {tries + 1} times "
                                    f"on the Ray cluster ({type(e).__name__}): check the cluster, then run the "
                                    "same command to resume") from None
                bar.write(f"{unit.variant.name} rounds {list(unit.rounds)}: lost ({type(e).__name__}), resubmitted")
                pending[task.remote(unit, arrays, threads)] = (unit, tries + 1)
                continue
            finished(unit, results)
            bar.update(unit.variant.cfg.epochs * len(unit.rounds))
    finally:
        ray.shutdown()
