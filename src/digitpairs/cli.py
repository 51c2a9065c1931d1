"""The `digitpairs` command: data fetch, list, reproduce, report. Flags are named like the Config fields."""

import argparse
import os
import sys
from pathlib import Path

from digitpairs import UserError, mnist
from digitpairs.config import PRESET_ROUNDS, PRESETS, Config

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

    rep = sub.add_parser("reproduce", help="the report's study: architectures x rounds, then its report")
    rep.add_argument("--quick", action="store_true",
                     help=f"few pairs, epochs and rounds ({PRESETS['quick']}, {PRESET_ROUNDS['quick']} rounds): "
                          "the whole path in seconds")
    rep.add_argument("--rounds", type=positive_int, help="rounds per architecture (default: 10, quick: 2)")
    rep.add_argument("--archs", default=None,
                     help="comma-separated architecture names (default: the report's six; see `digitpairs list`)")
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
                     help="torch threads per worker (default: cores / workers)")
    rep.add_argument("--batch-rounds", type=positive_int, default=10,
                     help="rounds of one architecture trained together as one batched model (default: 10)")
    add_data_dir(rep)

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
    return parser


CONFIG_FLAGS = ("epochs", "size", "n_pairs", "n_test", "batch_size", "lr", "alpha", "aux_loss", "seed", "precision")


def cmd_reproduce(args) -> int:
    from digitpairs.models import ARCHS, get_arch
    from digitpairs.report import writable_dir, write_report
    from digitpairs.store import Store
    from digitpairs.study import Study, run_study

    preset = "quick" if args.quick else "paper"
    base = Config().replace(**PRESETS[preset])
    overrides = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) is not None}
    cfg = base.replace(**overrides)
    archs = tuple(a.strip() for a in args.archs.split(",") if a.strip()) if args.archs else tuple(ARCHS)[:6]
    if not archs:
        raise UserError("--archs names no architecture: see `digitpairs list`")
    for a in archs:
        get_arch(a)
    rounds = args.rounds or PRESET_ROUNDS[preset]
    name = args.study or preset + "".join(f"-{k}{v}" for k, v in sorted(overrides.items())
                                          if getattr(base, k) != v)
    out = writable_dir(args.out or Path("runs") / name)
    store = Store(args.store)
    try:
        run_study(Study(name, archs, rounds, cfg), store, args.data_dir, workers=args.workers or os.cpu_count() or 1,
                  threads=args.threads,
                  batch_rounds=args.batch_rounds)
        path = write_report(store, name, out)
    finally:
        store.close()
    print(f"report: {path}")
    return 0


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
    from digitpairs import bench
    from digitpairs.models import get_arch

    get_arch(args.arch)
    cfg = Config().replace(size=args.size, epochs=args.epochs, precision=args.precision)
    bench.run(args.arch, cfg, args.rounds, args.data_dir)
    return 0


def cmd_list(args) -> int:
    from digitpairs.models import ARCHS, create_model

    cfg = Config().replace(size=args.size)
    print(f"{'name':<26} {'label':<26} {'#params':>9} {'report':>9}")
    for name, arch in ARCHS.items():
        report = f"{arch.report[2]:,}" if arch.report else ""
        print(f"{name:<26} {arch.label:<26} {create_model(name, cfg).num_params():>9,} {report:>9}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "data":
            path = mnist.fetch(args.data_dir)
            print(f"MNIST verified in {path}")
            return 0
        commands = {"list": cmd_list, "reproduce": cmd_reproduce, "report": cmd_report, "bench": cmd_bench}
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
