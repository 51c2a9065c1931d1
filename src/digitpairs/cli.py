"""The `digitpairs` command: data fetch, list, reproduce, report. Flags are named like the Config fields."""

import argparse
import os
import sys
from pathlib import Path

from digitpairs import UserError, mnist
from digitpairs.config import QUICK, QUICK_ROUNDS, Config

DEFAULT_STORE = Path("runs/digitpairs.sqlite")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the whole usage first)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def add_data_dir(p):
    p.add_argument("--data-dir", type=Path, default=None,
                   help="MNIST cache folder (default: $DIGITPAIRS_DATA, else ~/.cache/digitpairs/mnist)")


def build_parser() -> Parser:
    d = Config()
    parser = Parser(prog="digitpairs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    data = sub.add_parser("data", help="fetch and verify MNIST")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    add_data_dir(data_sub.add_parser("fetch", help="fetch the four IDX files into the cache and verify them"))

    ls = sub.add_parser("list", help="the registered architectures and their #params")
    ls.add_argument("--size", type=int, default=d.size, choices=(14, 28), help=f"image side (default: {d.size})")

    rep = sub.add_parser("reproduce", help="the report's study (the shipped studies/paper.toml), then its report")
    run = sub.add_parser("run", help="a study from a TOML file, then its report")
    run.add_argument("study_file", type=Path,
                     help="a study file (.toml), or the name of a shipped study: paper, alpha, aux_loss, beyond")
    for p in (rep, run):
        add_study_flags(p, d)
    rep.add_argument("--archs", default=None,
                     help="comma-separated architecture names (default: the report's six and ws_bn_aug_bayes; see "
                          "`digitpairs list`)")

    bench = sub.add_parser("bench", help="the plain reference loop against the engine, side by side")
    bench.add_argument("--arch", default="siamese_ws_aux", help="architecture (default: siamese_ws_aux)")
    bench.add_argument("--size", type=int, default=d.size, help=f"image side, 28 or 14 (default: {d.size})")
    bench.add_argument("--epochs", type=positive_int, default=5, help="epochs per round (default: 5)")
    bench.add_argument("--rounds", type=positive_int, default=10, help="rounds, trained together by the engine "
                       "(default: 10)")
    bench.add_argument("--precision", choices=("fp32", "bf16"), default=d.precision,
                       help=f"the engine's precision (default: {d.precision})")
    add_data_dir(bench)

    rpt = sub.add_parser("report", help="tables and figures of a study, from the store")
    rpt.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"SQLite results store (default: {DEFAULT_STORE})")
    rpt.add_argument("--study", default=None, help="study name (default: the newest in the store)")
    rpt.add_argument("--out", type=Path, default=None, help="report folder (default: runs/STUDY)")
    exp = sub.add_parser("export", help="export the store to another tool")
    exp_sub = exp.add_subparsers(dest="export_command", required=True, parser_class=Parser)
    ml = exp_sub.add_parser("mlflow", help="every run as an MLflow run (needs digitpairs[mlflow])")
    ml.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"SQLite results store (default: {DEFAULT_STORE})")
    ml.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: sqlite:///STORE_FOLDER/mlflow.db, artifacts beside it)")
    ml.add_argument("--study", action="append", default=None, help="a study to export (default: all); repeatable")
    for p in (ls, rep, run, bench, rpt, ml):
        p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                       help="import a module (name or .py path) that registers more architectures; repeatable")
    return parser


def add_study_flags(rep, d: Config) -> None:
    rep.add_argument("--quick", action="store_true",
                     help=f"few pairs, epochs and rounds ({QUICK}, {QUICK_ROUNDS} rounds): the whole path in seconds")
    rep.add_argument("--rounds", type=positive_int, help="rounds per architecture (default: the study's)")
    rep.add_argument("--epochs", type=positive_int, help=f"training epochs (default: {d.epochs})")
    rep.add_argument("--size", type=int, help=f"image side, 28 or 14 (default: {d.size})")
    rep.add_argument("--n-pairs", type=positive_int, help=f"training pairs per round (default: {d.n_pairs})")
    rep.add_argument("--n-test", type=positive_int, help=f"test pairs per round (default: {d.n_test})")
    rep.add_argument("--batch-size", type=positive_int, help=f"minibatch size (default: {d.batch_size})")
    rep.add_argument("--lr", type=float, help=f"Adam learning rate (default: {d.lr})")
    rep.add_argument("--alpha", type=float, help=f"weight of the auxiliary digit loss (default: {d.alpha})")
    rep.add_argument("--aux-loss", choices=("ce", "l2"), help=f"auxiliary criterion (default: {d.aux_loss})")
    rep.add_argument("--seed", type=int, help=f"base seed; round r uses seed + r (default: {d.seed})")
    rep.add_argument("--precision", choices=("fp32", "bf16"),
                     help=f"bf16: convolutions and matmuls in bfloat16 (default: {d.precision})")
    rep.add_argument("--study", default=None,
                     help="study name in the store (default: the preset's name plus the overridden fields)")
    rep.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"SQLite results store (default: {DEFAULT_STORE})")
    rep.add_argument("--out", type=Path, default=None, help="report folder (default: runs/STUDY)")
    rep.add_argument("--workers", type=positive_int, default=None,
                     help=f"worker processes (default: one per core, here {os.cpu_count()})")
    rep.add_argument("--threads", type=positive_int, default=None,
                     help="torch threads per worker, each training its own group of rounds (default: cores / "
                          "workers); with --backend ray, the CPUs each task declares and uses (default: 1)")
    rep.add_argument("--batch-rounds", type=positive_int, default=10,
                     help="rounds of one architecture in one unit of work (the engine trains them in groups of a "
                          "few rounds, each group one batched model) (default: 10)")
    rep.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local: worker processes here; ray: each unit a Ray task (needs digitpairs[ray])")
    rep.add_argument("--address", default=None,
                     help="with --backend ray: the cluster's HOST:PORT (default: start Ray here)")
    add_data_dir(rep)


CONFIG_FLAGS = ("epochs", "size", "n_pairs", "n_test", "batch_size", "lr", "alpha", "aux_loss", "seed", "precision")


def cmd_run(args, study_file: Path | None = None, spec_changes: dict | None = None) -> int:
    """Load the study file, apply --quick and the Config flags, train what the store lacks, write the report."""
    import dataclasses

    from digitpairs import studyfile
    from digitpairs.report import writable_dir, write_report
    from digitpairs.store import Store
    from digitpairs.study import run_study

    if args.address and args.backend != "ray":
        raise UserError("--address names a Ray cluster: add --backend ray")
    path = study_file or args.study_file
    if path.suffix != ".toml" and not path.exists() and studyfile.shipped(str(path)).is_file():
        path = studyfile.shipped(str(path))
    overrides = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) is not None}
    spec = studyfile.read(path) | (spec_changes or {})
    study = studyfile.build(spec, str(path), quick=args.quick, overrides=overrides)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else study.rounds)
    name = args.study or study.name + "-quick" * args.quick + "".join(
        f"-{k}{v}" for k, v in sorted(overrides.items()))
    study = dataclasses.replace(study, name=name, rounds=rounds)
    out = writable_dir(args.out or Path("runs") / name)
    store = Store(args.store)
    try:
        run_study(study, store, args.data_dir, workers=args.workers or os.cpu_count() or 1, threads=args.threads,
                  batch_rounds=args.batch_rounds, backend=args.backend, address=args.address)
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
        changes = {"archs": archs}
    return cmd_run(args, shipped("paper"), changes)


def cmd_report(args) -> int:
    from digitpairs.report import write_report
    from digitpairs.store import Store

    store = Store(args.store, create=False)
    try:
        study = args.study or (store.studies() or [None])[-1]
        path = write_report(store, study, args.out or Path("runs") / (study or "report"))
    finally:
        store.close()
    print(f"report: {path}")
    return 0


def cmd_bench(args) -> int:
    import dataclasses

    from digitpairs import bench
    from digitpairs.models import arch_config, get_arch

    arch = get_arch(args.arch)  # its own settings first, then the command line's
    cfg = arch_config(arch, Config(size=args.size)).replace(epochs=args.epochs, precision=args.precision)
    bench.run(dataclasses.replace(arch, extra={}), cfg, args.rounds, args.data_dir)
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
    print(f"{'name':<26} {'label':<26} {'#params':>9} {'report':>9}")
    for name, arch in ARCHS.items():
        report = f"{arch.report[2]:,}" if arch.report else ""
        print(f"{name:<26} {arch.label:<26} {create_model(name, cfg).num_params():>9,} {report:>9}")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "data":
            path = mnist.fetch(args.data_dir)
            print(f"MNIST verified in {path}")
            return 0
        for plugin in args.plugin:
            load_plugin(plugin)
        commands = {"list": cmd_list, "reproduce": cmd_reproduce, "run": cmd_run, "report": cmd_report,
                    "bench": cmd_bench, "export": cmd_export}
        return commands[args.command](args)
    except UserError as e:
        print(f"digitpairs: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("digitpairs: interrupted; finished runs are in the store, run the same command to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
