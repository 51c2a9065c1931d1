"""Running a study: train what the store lacks, sharing the work with any other process on the same study.

The Driver (runner/driver.py) plans and claims the units and stores their runs; a backend (runner/backends.py,
runner/ray.py) trains them.
"""

import os
from pathlib import Path

from digitpairs.data import mnist
from digitpairs.engine import group_rounds
from digitpairs.model import own_path
from digitpairs.runner.backends import InProcess, ProcessPool, dispatch
from digitpairs.runner.driver import Driver
from digitpairs.runner.ray import RayBackend
from digitpairs.spec.studyfile import Study, Variant
from digitpairs.store import Store


def run_study(study: Study, store: Store, data_dir: Path | None, workers: int = 1, threads: int | None = None,
              batch_rounds: int = 10, log=print, backend: str = "local", address: str | None = None,
              checkpoint_every: int = 1, keep_models: bool = True, on_stored=None) -> int:
    """Train what the store lacks, sharing the work with any other process on the same study; return the number of
    runs this process stored.

    backend "local": `workers` processes on this machine, each with `threads` torch threads (default: cores /
    workers). "ray": each unit a Ray task of `threads` CPUs (default 1) on the cluster at `address` (None: a Ray
    instance started here). Every result is written into the store by this process as it arrives, then handed to
    on_stored(runs) where given (live tracking)."""
    spec = study.spec()
    for entry, v in zip(spec["variants"], study.variants):
        entry["group_rounds"] = group_rounds(v.arch, v.cfg)  # kept only where the store has none for the variant
    drv = Driver(study, store, batch_rounds, by_cost=workers > 1 or backend == "ray",
                 checkpoint_every=checkpoint_every, keep_models=keep_models, on_stored=on_stored)
    planned = store.ensure_study(study.name, spec, write=False)
    drv.plan(planned)  # checked; stored once the rest is checked
    for entry, v in zip(planned["variants"], study.variants):
        if v.arch.own:  # built and checked above: a factory that fails is one line, before anything is stored
            log(path_line(v, min(entry.get("group_rounds") or 1, study.rounds)))
    try:
        if not drv.order:
            store.ensure_study(study.name, spec)  # a claim or a model named in the file since: the report's
            log(f"study {study.name!r}: all {len(study.variants) * study.rounds} runs are already in {store.path}")
            return 0
        mnist.fetch(data_dir, log)  # once, in the driver, so that workers only read the verified cache
        drv.check_checkpoints()
        store.check()
        drv.plan(store.ensure_study(study.name, spec))  # as stored: another process may have recorded the study
        drv.start()  # meanwhile, with group sizes of its own, and the stored ones hold
        dispatch(drv, backend_for(drv, data_dir, backend, workers, threads, address))
    finally:
        drv.close()
    return drv.trained


def path_line(v: Variant, group: int) -> str:
    """How a variant with networks of yours trains (model/members.py), in one line; group: its stored group size
    (a study resumed on another kind of device keeps its first device's grouping)."""
    mode, why, _ = own_path(v.arch, v.cfg)
    if mode == "batched":
        return f"{v.name}: batched, {group} rounds at once as one model (torch.func.vmap)"
    if mode == "batched-random":
        return (f"{v.name}: batched, {group} rounds at once as one model (torch.func.vmap); its own random "
                f"operations draw from torch's generator, seeded per group ({why})")
    if mode == "looped":
        return f"{v.name}: one round at a time, the rounds spread over threads and workers ({why})"
    return f"{v.name}: one round at a time, the rounds spread over threads and workers (not batched: {why})"


def backend_for(drv: Driver, data_dir, backend: str, workers: int, threads: int | None, address: str | None):
    """backend "ray": Ray tasks of `threads` CPUs (default 1); else worker processes here, `workers` of them with
    `threads` torch threads each (default: cores / workers), or this process where one unit or one worker is all."""
    if backend == "ray":
        return RayBackend(drv.study.variants, data_dir, threads or 1, address, log=drv.write)
    if workers == 1 or drv.n_units() == 1:
        return InProcess(drv, data_dir, threads or os.cpu_count() or 1)
    workers = min(workers, drv.n_units())
    return ProcessPool(drv, data_dir, workers, threads or max(1, (os.cpu_count() or 1) // workers))
