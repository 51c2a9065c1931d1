"""The driver of a study: the plan (variant x group of rounds) from what the store lacks, the units it claims in
the store, their runs stored as they arrive, the progress bar. Every backend feeds one Driver (runner/backends.py).

The rounds of a variant train in groups, each one batched model. The group size g is fixed when the variant is
first stored (its spec's `group_rounds`) and round r belongs to group r // g, so that a round's numbers never
depend on how the study was interrupted, resumed, grown or shared between processes. A unit of work is one or more
whole groups of one variant (up to `batch_rounds` rounds), trained by one call of the engine. Round r has seed
`cfg.seed + r`; every variant of round r trains on the same pairs.
"""

import sys
import time
from pathlib import Path

from tqdm import tqdm

from digitpairs.base.errors import UserError, reason
from digitpairs.base.files import probe
from digitpairs.engine.checkpoint import Checkpoints, in_folder
from digitpairs.model import create_model
from digitpairs.runner.units import Unit
from digitpairs.spec.records import RunResult
from digitpairs.spec.shapes import flops_per_pair
from digitpairs.spec.studyfile import Study, Variant
from digitpairs.store import Store, leases

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
    flops = create_model(v.arch, c).flops_per_pair() if v.arch.own else flops_per_pair(v.arch, c)
    return flops * c.n_pairs * c.epochs * c.members


def run_config(v: Variant) -> dict:
    """What a stored run records as its config: the resolved Config, the Arch and the sweep point."""
    return {"config": v.cfg.to_dict(), "arch": v.arch.to_dict(), "sweep": dict(v.sweep)}


class Driver:
    """The one place every backend feeds: it claims units in the store, stores their runs, ticks the progress."""

    def __init__(self, study: Study, store: Store, batch_rounds: int, by_cost: bool, checkpoint_every: int = 1,
                 keep_models: bool = True, on_stored=None):
        self.study, self.store, self.name, self.on_stored = study, store, study.name, on_stored
        self.batch_rounds, self.by_cost = batch_rounds, by_cost
        self.checkpoint_every, self.keep_models = checkpoint_every, keep_models
        self.trained, self.waiting, self.bar, self.heartbeat = 0, False, None, None

    def plan(self, spec: dict) -> None:
        """The order units take groups in, from the study's spec (its variants' group sizes) and what the store
        lacks now."""
        self.sizes = {v["name"]: v["group_rounds"] for v in spec["variants"]}
        self.per_unit = {v: max(1, self.batch_rounds // g) for v, g in self.sizes.items()}  # groups per unit
        self.order = plan(self.study, self.sizes, self.store.done(self.name))
        if self.by_cost:  # longest first, so that no long unit is left to run alone at the end (sort is stable)
            costs = {v.name: cost(v) for v in self.study.variants}
            self.order.sort(key=lambda vg: costs[vg[0].name], reverse=True)
        self.unseen = {(v.name, g[0]): len(g) * v.cfg.epochs for v, g in self.order}  # epochs not yet on the bar

    def start(self) -> None:
        """The progress bar, and the heartbeat of the claims to come."""
        done = self.store.done(self.name)
        missing = sum((v.name, r) not in done for v in self.study.variants for r in range(self.study.rounds))
        self.bar = tqdm(total=sum(self.unseen.values()), unit="epoch", desc=f"{self.name}: {missing} runs",
                        leave=True, dynamic_ncols=True, smoothing=0.05,
                        mininterval=0.1 if sys.stderr.isatty() else 30)
        self.heartbeat = leases.Heartbeat(self.store.path, self.name)

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
            self.check()
            with self.store.transaction() as db:
                done = self.store.done(self.name)
                busy = leases.held(db, self.name)
                left = [(v, g) for v, g in self.order if any((v.name, r) not in done for r in g)]
                free = [(v, g) for v, g in left if (v.name, g[0]) not in busy]
                unit = None
                if free:
                    v = free[0][0]
                    unit = Unit(v, tuple(g for w, g in free if w is v)[:self.per_unit[v.name]], self.checkpoints(v))
                    leases.claim(db, self.name, v.name, [g[0] for g in unit.groups])
            self._seen({(v.name, g[0]) for v, g in left})
            if unit is not None or not left or not block:
                self.waiting = self.waiting and unit is None
                return unit
            if not self.waiting:
                runs = sum((v.name, r) not in done for v, g in left for r in g)
                self.bar.write(f"waiting for {runs} runs that other processes are training ({leases.holders(busy)})")
                self.waiting = True
            time.sleep(POLL_S)

    def check(self) -> None:
        """A UserError where the heartbeat could not renew this process's claims: other processes may take its units
        over, so it stops (the backends check at every pass, and before each unit)."""
        if self.heartbeat is not None and self.heartbeat.lost:
            raise UserError(f"this process could not renew its claims in {self.store.path} ({self.heartbeat.lost}), "
                            "so other processes may take its units over: it stops; the runs it stored stay: run "
                            "the same command to resume")

    def checkpoints(self, v: Variant) -> Checkpoints | None:
        """A variant's checkpoint folder, beside the store: checkpoints/STORE/STUDY/VARIANT/group-R.pt, STORE the
        store file's name, so that two stores in one folder never share a checkpoint."""
        if not self.checkpoint_every:
            return None
        return Checkpoints(self.checkpoint_root() / v.name, self.checkpoint_every, self.checkpoint_root().parent.parent)

    def checkpoint_root(self) -> Path:
        """The study's checkpoints, beside the store; absolute, for Ray's nodes too."""
        store = self.store.path.resolve()
        return store.parent / "checkpoints" / store.name / self.name

    def check_checkpoints(self) -> None:
        """Checkpoints can be written beside the store: found before any training, not after its first epoch."""
        if not self.checkpoint_every:
            return
        folder = self.checkpoint_root()
        made = [f for f in (folder.parent.parent, folder.parent, folder) if not f.exists()]
        try:
            in_folder(folder, lambda: probe(folder))
        except OSError as e:
            raise UserError(f"cannot write checkpoints in {str(folder)!r} ({reason(e)}): pass "
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

    def write(self, line: str) -> None:
        """A line above the progress bar."""
        self.bar.write(line)

    def tick(self, epochs: int) -> None:
        if epochs:
            self.bar.update(epochs)

    def finished(self, unit: Unit, code: dict, results: list[RunResult]) -> None:
        """Store a unit's runs (those another process has not stored first) and drop its claims."""
        v = unit.variant
        if not self.keep_models:
            for r in results:
                r.weights = None
        added = self.store.add_runs(self.name, v.name, run_config(v), results, code, tuple(g[0] for g in unit.groups))
        for g in unit.groups:
            self.unseen.pop((v.name, g[0]), None)
            if unit.checkpoints is not None:  # its runs are stored: the group's checkpoint has done its work
                unit.checkpoints.remove(list(g))
        self.trained += len(added)
        for r in added:
            self.bar.write(f"{v.name:<28} round {r.round:>2}  test acc {r.test_acc:.4f}  ({r.wall_s:.1f} s/run)")
        if self.on_stored is not None:  # live tracking (export.mlflow.Live)
            self.on_stored(added)

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.close()
            leases.release_all(self.store.path, self.name)
        if self.bar is not None:
            self.bar.close()
