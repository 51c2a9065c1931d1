"""The `digitpairs` command: each subcommand's work and main(); the flags and their checks are in flags.py."""

import errno
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import torch

from digitpairs import UserError, mnist, predict, printable
from digitpairs.config import QUICK_ROUNDS, Config
from digitpairs.flags import CONFIG_FLAGS, RUN_OPTIONS, build_parser


def cmd_run(args, study_file: Path | None = None, spec_changes: dict | None = None) -> int:
    """Load the study file, apply --quick and the Config flags, train what the store lacks, write the report."""
    import dataclasses

    from digitpairs import device as devices
    from digitpairs import studyfile
    from digitpairs.report import writable_dir, write_report
    from digitpairs.store import Store
    from digitpairs.study import run_study

    if args.address and args.backend != "ray":
        raise UserError("--address names a Ray cluster: add --backend ray")
    if args.address:
        from digitpairs.ray_backend import check_address

        check_address(args.address)
    path = study_file or args.study_file
    if path.suffix != ".toml" and not path.is_file() and studyfile.shipped(str(path)).is_file():
        path = studyfile.shipped(str(path))  # `run alpha` beside a folder named alpha: the shipped study
    overrides = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) is not None}
    spec = studyfile.read(path) | (spec_changes or {})
    study = studyfile.build(spec, str(path), quick=args.quick, overrides=overrides)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else study.rounds)
    name = args.study or study.name + "-quick" * args.quick + "".join(
        f"-{k}{v}" for k, v in sorted(overrides.items()) if k not in RUN_OPTIONS)
    variants = study.variants
    if args.cuda_graphs is None and "cuda_graphs" not in spec.get("config", {}):  # neither flag nor file: on a GPU
        variants = tuple(dataclasses.replace(v, cfg=v.cfg.replace(cuda_graphs=True))
                         if devices.graphs_by_default(v.cfg.device, cluster=args.backend == "ray") else v
                         for v in variants)
    study = dataclasses.replace(study, name=name, rounds=rounds, variants=variants)
    for v in study.variants if args.backend != "ray" else ():  # (Ray: the cluster's devices)
        devices.check(v.cfg.device, v.cfg.cuda_graphs)  # a GPU that is not there: one line, before anything is stored
    out = writable_dir(args.out or args.store.parent / name)  # beside its store: another store's report stays
    store = Store(args.store)
    try:
        run_study(study, store, args.data_dir, workers=args.workers or os.cpu_count() or 1, threads=args.threads,
                  batch_rounds=args.batch_rounds, backend=args.backend, address=args.address,
                  checkpoint_every=args.checkpoint_every, keep_models=args.keep_models)
        report = write_report(store, name, out)
    finally:
        store.close()
    print(f"report: {report}")
    return 0


def cmd_reproduce(args) -> int:
    from digitpairs.studyfile import shipped

    changes = None
    if args.archs is not None:
        archs = [a.strip() for a in args.archs.split(",") if a.strip()]
        if not archs:
            raise UserError("--archs names no architecture: see `digitpairs list`")
        from digitpairs.models import ARCHS

        unknown = [a for a in archs if a not in ARCHS]
        if unknown:
            raise UserError(f"--archs: unknown architecture {unknown[0]!r}: see `digitpairs list` (or load yours "
                            "with --plugin)")
        changes = {"archs": archs}
    return cmd_run(args, shipped("paper"), changes)


def cmd_report(args) -> int:
    from digitpairs.report import write_report
    from digitpairs.store import Store
    from digitpairs.studyfile import check_name

    store = Store(args.store, create=False)
    try:
        study = args.study or (store.studies() or [None])[-1]
        if args.out is None and study is not None:  # the default folder is named after the study
            check_name(study, "study name, as the report's folder (or pass --out),")
        path = write_report(store, study, args.out or args.store.parent / (study or "report"))
    finally:
        store.close()
    print(f"report: {path}")
    return 0


def cmd_bench(args) -> int:
    import dataclasses

    from digitpairs import bench
    from digitpairs import device as devices
    from digitpairs.models import arch_config, get_arch

    arch = get_arch(args.arch)  # its own settings first, then the command line's
    dev = args.device or Config().device
    graphs = devices.graphs_by_default(dev) if args.cuda_graphs is None else args.cuda_graphs
    base = Config().replace(size=args.size, device=dev,  # checked before its own settings
                            cuda_graphs=graphs, matmul_conv=bool(args.matmul_conv))
    cfg = arch_config(arch, base).replace(epochs=args.epochs, precision=args.precision)
    devices.check(cfg.device, cfg.cuda_graphs)
    bench.run(dataclasses.replace(arch, extra={}), cfg, args.rounds, args.data_dir, device=cfg.device)
    return 0


def cmd_export(args) -> int:
    from digitpairs.export import export
    from digitpairs.store import Store

    store = Store(args.store, create=False)
    uri = args.tracking_uri or f"sqlite:///{args.store.resolve().parent / 'mlflow.db'}"
    try:
        added = export(store, uri, args.study)
    finally:
        store.close()
    print(f"mlflow: {added} runs added to {uri} (browse: mlflow ui --backend-store-uri {uri})")
    return 0


def cmd_list(args) -> int:
    from digitpairs.models import ARCHS, create_model

    cfg = Config().replace(size=args.size)
    print(f"{'name':<24} {'label':<24} {'objective':<18} {'head':<6} {'branch':<18} {'#params':>8} {'report':>8}")
    for name, arch in ARCHS.items():
        report = f"{arch.report[2]:,}" if arch.report else ""
        branch = ",".join(["shared" if arch.share else "two"] + ["bn"] * arch.bn + ["dropout"] * arch.dropout)
        print(f"{name:<24} {arch.label:<24} {arch.objective:<18} {arch.head:<6} {branch:<18} "
              f"{create_model(name, cfg).num_params():>8,} {report:>8}")
    return 0


def load_plugin(name: str) -> None:
    """Import a user's module (dotted name, or a path to a .py file) so that its architectures register."""
    import importlib
    import importlib.util

    try:
        if name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(name).stem, name)
            if spec is None or not Path(name).is_file():
                raise ImportError(f"no file {name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any failure in the user's module is reported in one line
        raise UserError(f"cannot import plugin {name!r} ({type(e).__name__}: {e}): check the module") from None


SIGTERM_SEEN = threading.Event()


def _terminated(signum, frame):
    """SIGTERM: a KeyboardInterrupt, like SIGINT, so that the same clean-up runs (in Ray too); only the exit code and
    the message differ."""
    SIGTERM_SEEN.set()
    raise KeyboardInterrupt


RESUME = "finished runs are in the store; run the same command to resume"


def failure(e: BaseException, store) -> tuple[int, str]:
    """(exit code, the one line to print) for an error that ends a command; store: its --store, if it has one."""
    if isinstance(e, UserError):
        return 2, str(e)
    if isinstance(e, sqlite3.OperationalError) and "readonly" in str(e):
        return 2, (f"the store {store} cannot be written ({e}): pass --store with a writable file (the runs stored "
                   "so far stay)")
    if type(e) is sqlite3.DatabaseError:  # not its subclasses (a closed connection, a constraint): the file's own
        return 2, f"the store {store} is damaged ({e}): restore a copy, or pass another --store"  # written no more
    if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
        return 2, f"a path is too long: {e}"
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return 1, f"the GPU is out of memory: pass fewer --workers or --batch-rounds; {RESUME}"
    return 1, f"{e}: fix it (free space, a folder that exists), then {RESUME}"  # a full disk, a folder gone


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    SIGTERM_SEEN.clear()
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        if args.command == "data":
            path = mnist.fetch(args.data_dir)
            print(f"MNIST verified in {path}")
            return 0
        for plugin in args.plugin:
            load_plugin(plugin)
        commands = {"list": cmd_list, "reproduce": cmd_reproduce, "run": cmd_run, "report": cmd_report,
                    "bench": cmd_bench, "export": cmd_export, "predict": predict.cmd_predict}
        return commands[args.command](args)
    except KeyboardInterrupt:
        if SIGTERM_SEEN.is_set():
            print(f"digitpairs: terminated (SIGTERM); {RESUME}", file=sys.stderr)
            return 143
        print(f"digitpairs: interrupted; {RESUME}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (UserError, OSError, sqlite3.DatabaseError, torch.cuda.OutOfMemoryError) as e:
        code, line = failure(e, getattr(args, "store", ""))
        print(f"digitpairs: error: {printable(line)}", file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, before)
