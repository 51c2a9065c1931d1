"""`digitpairs run` and `digitpairs reproduce`: a study from its file, trained where the store lacks runs, then its
report."""

import dataclasses
import os
import sys
from pathlib import Path

from digitpairs import device as devices
from digitpairs.base.errors import UserError
from digitpairs.cli.parser import config_overrides
from digitpairs.export.mlflow import Live
from digitpairs.report.write import output_dir, write_report
from digitpairs.runner.ray import check_address
from digitpairs.runner.study import run_study
from digitpairs.spec import studyfile
from digitpairs.spec.config import QUICK_ROUNDS
from digitpairs.spec.registry import ARCHS
from digitpairs.store import Store


def cmd_run(args, study_file: Path | None = None, spec_changes: dict | None = None) -> int:
    """Load the study file, apply --quick and the Config flags, train what the store lacks, write the report."""
    if args.address and args.backend != "ray":
        raise UserError("--address names a Ray cluster: add --backend ray")
    if args.address:
        check_address(args.address)
    path = studyfile.locate(study_file or args.study_file)
    overrides = config_overrides(args)
    spec = studyfile.read(path) | (spec_changes or {})
    study = studyfile.build(spec, str(path), quick=args.quick, overrides=overrides)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else study.rounds)
    name = args.study or studyfile.run_name(study.name + "-quick" * args.quick, overrides)
    variants = study.variants
    if args.cuda_graphs is None and "cuda_graphs" not in spec.get("config", {}):  # neither flag nor file: on a GPU
        variants = tuple(dataclasses.replace(v, cfg=v.cfg.replace(cuda_graphs=True))
                         if devices.graphs_by_default(v.cfg.device, cluster=args.backend == "ray") else v
                         for v in variants)
    study = dataclasses.replace(study, name=name, rounds=rounds, variants=variants)
    for v in study.variants if args.backend != "ray" else ():  # (Ray: the cluster's devices)
        devices.check(v.cfg.device, v.cfg.cuda_graphs)  # a GPU that is not there: one line, before anything is stored
    out = output_dir(args.out or args.store.parent / name)  # beside its store: another store's report stays
    store = Store(args.store)
    try:
        live = tracking(args, store, name)
        run_study(study, store, args.data_dir, workers=args.workers or os.cpu_count() or 1, threads=args.threads,
                  batch_rounds=args.batch_rounds, backend=args.backend, address=args.address,
                  checkpoint_every=args.checkpoint_every, keep_models=args.keep_models,
                  on_stored=live and live.stored)
        report = write_report(store, name, out)
        if live:
            live.finish()
    finally:
        store.close()
    print(f"report: {report}")
    return 0


def tracking(args, store: Store, study: str) -> Live | None:
    """Live tracking in MLflow where --mlflow names a tracking URI or MLFLOW_TRACKING_URI is set (the flag wins)."""
    uri = args.mlflow or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return None
    try:
        return Live(store, uri, study, log=lambda line: print(line, file=sys.stderr))
    except UserError as e:
        if args.mlflow:
            raise
        print(f"digitpairs: warning: MLFLOW_TRACKING_URI is set, but no live tracking ({e})", file=sys.stderr)
        return None


def cmd_reproduce(args) -> int:
    changes = None
    if args.archs is not None:
        archs = [a.strip() for a in args.archs.split(",") if a.strip()]
        if not archs:
            raise UserError("--archs names no architecture: see `digitpairs list`")
        unknown = [a for a in archs if a not in ARCHS]
        if unknown:
            raise UserError(f"--archs: unknown architecture {unknown[0]!r}: see `digitpairs list` (or load yours "
                            "with --plugin)")
        changes = {"archs": archs}
    return cmd_run(args, studyfile.shipped("paper"), changes)
