"""Running a study: the plan (variant x group of rounds) from what the store lacks, shared work, resuming.

The rounds of a variant train in groups, each one batched model. The group size g is fixed when the variant is
first stored (its spec's `group_rounds`) and round r belongs to group r // g, so that a round's numbers never
depend on how the study was interrupted, resumed, grown or shared between processes. A unit of work is one or more
whole groups of one variant (up to `batch_rounds` rounds), trained by one call of the engine. Round r has seed
`cfg.seed + r`; every variant of round r trains on the same pairs.

Three backends train the units (in this process, in worker processes, as Ray tasks); each feeds one Driver, which
claims units in the store (digitpairs.claims), stores their runs as they arrive and ticks the progress bar.
"""

import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from digitpairs import UserError, claims, mnist
from digitpairs.checkpoint import Checkpoints, in_folder
from digitpairs.models import create_model
from digitpairs.store import Store
from digitpairs.studyfile import Study, Variant
from digitpairs.train import RunResult, group_rounds
from digitpairs.units import Unit, init, interrupts_blocked, run_unit, worker_init

POLL_S = 2.0  # how often a process that waits for other processes' units looks at the store


def groups_of(rounds: int, size: int) -> list[tuple[int, ...]]:
    """The groups of a variant's rounds: round r is in group r // size (stable when a study grows its rounds)."""
    return [tuple(range(a, min(a + size, rounds))) for a in range(0, rounds, size)]


def plan(study: Study, sizes: dict[str, int], done: set[tuple[str, int]]) -> list[tuple[Variant, tuple[int, ...]]]:
    """The groups that lack a run, variant by variant in round order. A group trains whole even where some of its
    rounds are stored (the last group of a study that grew), so that its new rounds get an uninterrupted run's
    numbers; the stored ones are kept as they are."""
    return [(v, g) for v in study.variants for g in groups_of(study.rounds, sizes[v.name])
            if any((v.name, r) not in done for r in g)]


def cost(v: Variant) -> float:
    """A round's training work in FLOPs (forward, per pair, times pairs, epochs and members)."""
    c = v.cfg
    return create_model(v.arch, c).flops_per_pair() * c.n_pairs * c.epochs * c.members


def run_config(v: Variant) -> dict:
    """What a stored run records as its config: the resolved Config, the Arch and the sweep point."""
    return {"config": v.cfg.to_dict(), "arch": v.arch.to_dict(), "sweep": dict(v.sweep)}


class Driver:
    """The one place every backend feeds: it claims units in the store, stores their runs, ticks the progress."""

    def __init__(self, study: Study, spec: dict, store: Store, batch_rounds: int, by_cost: bool,
                 checkpoint_every: int = 1, keep_models: bool = True):
        self.study, self.store, self.name = study, store, study.name
        self.checkpoint_every, self.keep_models = checkpoint_every, keep_models
        self.sizes = {v["name"]: v["group_rounds"] for v in spec["variants"]}
        self.per_unit = {v: max(1, batch_rounds // g) for v, g in self.sizes.items()}  # groups per unit
        self.order = plan(study, self.sizes, store.done(self.name))  # the order units take groups in
        if by_cost:  # longest first, so that no long unit is left to run alone at the end (sort is stable)
            costs = {v.name: cost(v) for v in study.variants}
            self.order.sort(key=lambda vg: costs[vg[0].name], reverse=True)
        self.unseen = {(v.name, g[0]): len(g) * v.cfg.epochs for v, g in self.order}  # epochs not yet on the bar
        self.trained, self.waiting, self.bar, self.heartbeat = 0, False, None, None

    def start(self) -> None:
        """The progress bar, and the heartbeat of the claims to come."""
        done = self.store.done(self.name)
        missing = sum((v.name, r) not in done for v in self.study.variants for r in range(self.study.rounds))
        self.bar = tqdm(total=sum(self.unseen.values()), unit="epoch", desc=f"{self.name}: {missing} runs",
                        leave=True, dynamic_ncols=True, smoothing=0.05,
                        mininterval=0.1 if sys.stderr.isatty() else 30)
        self.heartbeat = claims.Heartbeat(self.store.path, self.name)

    def n_units(self) -> int:
        """Units left at the start (at most: other processes may take some)."""
        count = {}
        for v, _ in self.order:
            count[v.name] = count.get(v.name, 0) + 1
        return sum(-(-n // self.per_unit[name]) for name, n in count.items())

    def take(self, block: bool) -> Unit | None:
        """Claim the next unit: the first unclaimed group that lacks runs, and the unclaimed ones after it of its
        variant, up to batch_rounds rounds. None: none left; or, unless `block`, none to claim now. `block` waits
        while every group left is claimed by another process, and takes over a claim whose holder died."""
        while True:
            with self.store.transaction() as db:
                done = self.store.done(self.name)
                busy = claims.held(db, self.name)
                left = [(v, g) for v, g in self.order if any((v.name, r) not in done for r in g)]
                free = [(v, g) for v, g in left if (v.name, g[0]) not in busy]
                unit = None
                if free:
                    v = free[0][0]
                    unit = Unit(v, tuple(g for w, g in free if w is v)[:self.per_unit[v.name]], self.checkpoints(v))
                    claims.claim(db, self.name, v.name, [g[0] for g in unit.groups])
            self._seen({(v.name, g[0]) for v, g in left})
            if unit is not None or not left or not block:
                self.waiting = self.waiting and unit is None
                return unit
            if not self.waiting:
                runs = sum((v.name, r) not in done for v, g in left for r in g)
                self.bar.write(f"waiting for {runs} runs that other processes are training ({claims.holders(busy)})")
                self.waiting = True
            time.sleep(POLL_S)

    def checkpoints(self, v: Variant) -> Checkpoints | None:
        """A variant's checkpoint folder, beside the store: checkpoints/STUDY/VARIANT/group-R.pt."""
        if not self.checkpoint_every:
            return None
        return Checkpoints(self.checkpoint_root() / v.name, self.checkpoint_every)

    def checkpoint_root(self) -> Path:
        """The study's checkpoints, beside the store; absolute, for Ray's nodes too."""
        return self.store.path.resolve().parent / "checkpoints" / self.name

    def check_checkpoints(self) -> None:
        """Checkpoints can be written beside the store: found before any training, not after its first epoch."""
        if not self.checkpoint_every:
            return
        folder = self.checkpoint_root()
        made = [f for f in (folder.parent, folder) if not f.exists()]
        try:
            in_folder(folder, lambda: tempfile.TemporaryFile(dir=folder).close())
        except OSError as e:
            raise UserError(f"cannot write checkpoints in {str(folder)!r} ({e.strerror or e}): pass "
                            "--checkpoint-every 0, or a --store in a writable folder") from None
        for f in reversed(made):  # made here only to be checked: each group makes its own when it saves
            try:
                f.rmdir()
            except OSError:  # another process's checkpoint is in it already
                break

    def _seen(self, left: set[tuple[str, int]]) -> None:
        """Groups that other processes finished: their epochs onto the bar."""
        for key in [k for k in self.unseen if k not in left]:
            self.tick(self.unseen.pop(key))

    def tick(self, epochs: int) -> None:
        if epochs:
            self.bar.update(epochs)

    def finished(self, unit: Unit, code: dict, results: list[RunResult]) -> None:
        """Store a unit's runs (those another process has not stored first) and drop its claims."""
        v = unit.variant
        if not self.keep_models:
            for r in results:
                r.state = None
        added = self.store.add_runs(self.name, v.name, run_config(v), results, code, tuple(g[0] for g in unit.groups))
        for g in unit.groups:
            self.unseen.pop((v.name, g[0]), None)
            if unit.checkpoints is not None:  # its runs are stored: the group's checkpoint has done its work
                unit.checkpoints.remove(list(g))
        self.trained += len(added)
        for r in added:
            self.bar.write(f"{v.name:<28} round {r.round:>2}  test acc {r.test_acc:.4f}  ({r.wall_s:.1f} s/run)")

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.close()
            claims.release_all(self.store.path, self.name)
        if self.bar is not None:
            self.bar.close()


def run_study(study: Study, store: Store, data_dir: Path | None, workers: int = 1, threads: int | None = None,
              batch_rounds: int = 10, log=print, backend: str = "local", address: str | None = None,
              checkpoint_every: int = 1, keep_models: bool = True) -> int:
    """Train what the store lacks, sharing the work with any other process on the same study; return the number of
    runs this process stored.

    backend "local": `workers` processes on this machine, each with `threads` torch threads (default: cores /
    workers). "ray": each unit a Ray task of `threads` CPUs (default 1) on the cluster at `address` (None: a Ray
    instance started here). Every result is written into the store by this process as it arrives."""
    spec = study.spec()
    for entry, v in zip(spec["variants"], study.variants):
        entry["group_rounds"] = group_rounds(v.cfg)  # kept only where the store has none for the variant

    def driver(spec: dict) -> Driver:
        return Driver(study, spec, store, batch_rounds, by_cost=workers > 1 or backend == "ray",
                      checkpoint_every=checkpoint_every, keep_models=keep_models)

    drv = driver(store.ensure_study(study.name, spec, write=False))  # checked; stored once the rest is checked
    try:
        if not drv.order:
            store.ensure_study(study.name, spec)  # a claim or a model named in the file since: the report's
            log(f"study {study.name!r}: all {len(study.variants) * study.rounds} runs are already in {store.path}")
            return 0
        mnist.fetch(data_dir, log)  # once, in the driver, so that workers only read the verified cache
        drv.check_checkpoints()
        store.check()
        drv = driver(store.ensure_study(study.name, spec))  # as stored: another process may have recorded the
        drv.start()  # study meanwhile, with group sizes of its own, and the stored ones hold
        if backend == "ray":
            from digitpairs.ray_backend import run_ray

            run_ray(drv, data_dir, threads or 1, address)
        elif workers == 1 or drv.n_units() == 1:
            _run_here(drv, data_dir, threads or os.cpu_count() or 1)
        else:
            workers = min(workers, drv.n_units())
            _run_pool(drv, data_dir, workers, threads or max(1, (os.cpu_count() or 1) // workers))
    finally:
        drv.close()
    return drv.trained


def _run_here(drv: Driver, data_dir, threads: int) -> None:
    """The in-process backend: one unit after another."""
    init(data_dir, threads, drv.tick)
    while (unit := drv.take(block=True)) is not None:
        drv.finished(unit, *run_unit(unit))


# --- worker processes on this machine ---
def _run_pool(drv: Driver, data_dir, workers: int, threads: int, work=run_unit) -> None:
    """Worker processes: at most `workers` units in flight, each claimed just before it is submitted. On any
    exception (an interrupt, a failed unit) the workers are killed at once: what they were training is lost, what
    arrived is stored. work(unit) -> (code, results) runs in the workers (a module-level function)."""
    ctx = mp.get_context("spawn")
    counter, lock = ctx.RawValue("q", 0), ctx.Lock()  # epochs finished by every worker together
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker_init,
                               initargs=(data_dir, threads, counter, lock, os.getpid()))
    pending, shown = {}, 0
    try:
        while True:
            while len(pending) < workers and (unit := drv.take(block=not pending)) is not None:
                with interrupts_blocked():
                    pending[pool.submit(work, unit)] = unit
            if not pending:
                break
            ready, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            drv.tick(counter.value - shown)
            shown = counter.value
            for fut in sorted(ready, key=lambda f: f.exception() is not None):  # what succeeded is stored first
                drv.finished(pending.pop(fut), *fut.result())
    except BaseException as e:
        pool.shutdown(wait=False, cancel_futures=True)
        for p in mp.active_children():
            p.kill()
        if isinstance(e, BrokenProcessPool):
            raise UserError("a worker process died (out of memory? killed?): finished runs are in the store; "
                            "run the same command to resume, with fewer --workers") from None
        raise
    pool.shutdown()
