"""The Ray backend: each unit a Ray task on a cluster, or on an instance of Ray started here (Ray itself is imported
only when asked for: the extra digitpairs[ray]). The driver claims units and writes every result into the store
(runner/backends.py)."""

import os
import signal
import socket
import sys

from digitpairs.base.errors import UserError, first_line, reason
from digitpairs.base.procfs import descendants
from digitpairs.data import mnist
from digitpairs.runner.units import Unit, init, interrupts_blocked, on_this_machine, run_unit
from digitpairs.spec import plugins
from digitpairs.spec.records import RunResult

RAY_RESUBMITS = 3  # resubmissions of a unit lost with its node or worker (the driver resubmits, not Ray)


def ray_unit(unit: Unit, arrays: dict, threads: int) -> tuple[dict, list[RunResult]]:
    """A unit on a Ray worker: MNIST comes from the driver's verified copy through the object store."""
    init(None, threads, arrays=arrays)
    return run_unit(on_this_machine(unit))


def check_address(address: str) -> None:
    """A cluster's HOST:PORT (or ray://HOST:PORT) answers, checked in seconds before anything is stored: Ray itself
    retries an unreachable address for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep:
        return  # Ray's own forms and errors
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise UserError(f"--address {address}: a port is 1 to 65535: pass --address HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, OverflowError, ValueError) as e:
        why = reason(e) if isinstance(e, OSError) else first_line(e)
        raise UserError(f"cannot reach the Ray cluster at {address} ({why}): start it with `ray start --head` "
                        "or pass --address HOST:PORT") from None


def _ray_start(address: str | None, threads: int):
    """Ray, connected to the cluster at `address` or to an instance of its own; a task of `threads` CPUs that no
    node can hold is refused here, before anything is submitted."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting unless the user turned it on
    # at shutdown, wait at most this long to flush task events (what Ray's dashboard shows) to a head that may be
    # gone already: a SIGTERM to the process group ends Ray's processes at the same time as this one
    os.environ.setdefault("RAY_task_events_shutdown_flush_timeout_ms", "500")
    if not address:  # a Ray instance of this command's own: single-node, on loopback only (read when Ray loads)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'digitpairs[ray]'") from None
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, logging_level="WARNING")
        else:  # its processes start with the interrupts blocked (Ray blocks SIGINT itself): a signal to the process
            with interrupts_blocked():  # group is the driver's to act on; if it ended the raylet first, Ray
                ray.init(include_dashboard=False, logging_level="WARNING")  # would end the driver, exit code 1
        signal.signal(signal.SIGTERM, on_term)  # Ray's own handler exits at once: SIGTERM is the driver's
        most = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
        if threads > most:
            raise UserError(f"--threads {threads}: no node of the Ray cluster has that many CPUs (the largest has "
                            f"{most:g}): pass --threads {max(1, int(most))} or less")
    except BaseException as e:  # a failed start, a refusal, an interrupt: nothing of Ray is left behind
        _ray_stop(ray, own=not address)
        if isinstance(e, (ConnectionError, RuntimeError, ValueError)):
            raise UserError(f"cannot reach the Ray cluster at {address or 'a new local instance'} ({first_line(e)}): start "
                            "it with `ray start --head` or pass --address HOST:PORT") from None
        raise
    return ray


def by_value(variants) -> None:
    """A plugin file's code travels with the tasks (a node need not have the file); an installed plugin's module is
    imported there by name, so its package must be installed on every node."""
    from ray import cloudpickle  # Ray's own copy pickles the tasks' arguments

    for v in variants:
        for part in v.arch.own_parts:
            module = sys.modules.get(v.arch.factory(part).__module__)
            if module is not None and module.__name__.startswith(plugins.FILE_PREFIX):
                cloudpickle.register_pickle_by_value(module)


class RayBackend:
    """Ray tasks: at most as many units in flight as the cluster has slots of `threads` CPUs (and a GPU on CUDA). A
    unit lost with its node or worker is resubmitted, up to RAY_RESUBMITS times."""

    def __init__(self, variants, data_dir, threads: int, address: str | None, log=print):
        self.ray, self.threads, self.address, self.log = _ray_start(address, threads), threads, address, log
        self.tries: dict[tuple, int] = {}
        self.epochs = 0
        try:
            from ray.exceptions import RayError, RayTaskError

            self.errors = RayError, RayTaskError
            self.arrays = self.ray.put(mnist.load(data_dir, log=lambda *a: None))  # verified by the driver, shared
            # on CUDA a task declares one GPU, and trains on the one Ray gives it (CUDA_VISIBLE_DEVICES: "cuda" is it)
            self.gpus = int(any(v.cfg.device.startswith("cuda") for v in variants))
            have = self.ray.cluster_resources()
            if self.gpus and have.get("GPU", 0) < 1:  # a task no node can run would wait for ever
                raise UserError(f"--device cuda: the Ray cluster has no GPU ({have.get('CPU', 0):g} CPUs, no GPU): "
                                "pass --device cpu, or add a node with a GPU")
            self.task = self.ray.remote(num_cpus=threads, num_gpus=self.gpus, max_retries=0)(ray_unit)
            by_value(variants)
        except BaseException:
            _ray_stop(self.ray, own=not address)
            raise

    def slots(self) -> int:
        have = self.ray.cluster_resources()  # claimed units wait in none
        return max(1, int(min(have.get("CPU", 0) // self.threads,
                              have.get("GPU", 0) if self.gpus else float("inf"))))

    def submit(self, unit: Unit):
        return self.task.remote(unit, self.arrays, self.threads)

    def ready(self, handles: list, timeout: float) -> list:
        return self.ray.wait(handles, num_returns=1, timeout=timeout)[0]

    def result(self, handle, unit: Unit):
        RayError, RayTaskError = self.errors
        try:
            code, results = self.ray.get(handle)
        except RayTaskError as e:  # the unit itself failed: the same error as on this machine
            cause = getattr(e, "cause", None)
            raise cause if isinstance(cause, UserError) else e
        except RayError as e:  # lost with its node or worker: train it again
            key = (unit.variant.name, unit.rounds)
            tries = self.tries.get(key, 0)
            if tries >= RAY_RESUBMITS:
                raise UserError(f"{unit.variant.name} rounds {list(unit.rounds)} were lost {tries + 1} times on "
                                f"the Ray cluster ({type(e).__name__}): check the cluster, then run the same "
                                "command to resume") from None
            self.tries[key] = tries + 1
            self.log(f"{unit.variant.name} rounds {list(unit.rounds)}: lost ({type(e).__name__}), resubmitted")
            return None
        self.epochs += unit.variant.cfg.epochs * len(unit.rounds)
        return code, results

    def progress(self) -> int:
        n, self.epochs = self.epochs, 0
        return n

    def abort(self, handles: list) -> None:
        """On a cluster of the user's, the units in flight are cancelled; an instance of our own is killed whole by
        close() instead (cancelling its tasks first raced with their replies inside Ray and could end this
        process)."""
        for ref in handles if self.address else ():
            try:
                self.ray.cancel(ref, force=True)
            except self.errors[0]:  # the task's node is gone already
                pass

    def close(self) -> None:
        _ray_stop(self.ray, own=not self.address)


def _ray_stop(ray, own: bool) -> None:
    """Disconnect from Ray. An instance of our own is killed first, every process of it (the processes below this
    one): its state is this command's alone, and ray.shutdown() would wait 1 s for each to end on a SIGTERM that
    they block (_ray_start), and leave the raylet's agents running."""
    if own:
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    ray.shutdown()
