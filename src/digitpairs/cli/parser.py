"""The command line's flags: the argument parser of `digitpairs`, and the types that check each flag's value (one
line and exit code 2 for a bad one, before anything runs). Flags are named like the Config fields."""

import argparse
import dataclasses
import os
from pathlib import Path

from digitpairs.base.errors import UserError, printable
from digitpairs.spec.config import CHOICES, GROUPS, MAX_ROUNDS, QUICK, QUICK_ROUNDS, Config, comments
from digitpairs.spec.diagnosis import DEFAULT as DIAGNOSIS
from digitpairs.spec.names import check_name
from digitpairs.spec.studyfile import shipped_names

DESCRIPTION = ("The digitpairs command: data fetch, list, reproduce, run, bench, report, verify, studies, compare, "
               "export, predict.")

DEFAULT_STORE = Path("runs/digitpairs.sqlite")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the whole usage first)
        self.exit(2, f"{self.prog}: error: {printable(message)} (see --help)\n")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (and at most 10**6)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {text!r}") from None
    if not 0 <= value <= 10**6:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 1000000, not {text!r}")
    return value


def positive_int(text: str, most: int | None = None) -> int:
    """An argparse type: an integer >= 1 (and <= most, if given)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value <= 0 or (most is not None and value > most):
        bound = f" up to {most}" if most is not None else ""
        raise argparse.ArgumentTypeError(f"expected a positive integer{bound}, not {text!r}")
    return value


def at_most(most: int):
    """positive_int with an upper bound, as an argparse type."""
    return lambda text: positive_int(text, most)


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text!r}")
    return value


def path(text: str) -> Path:
    """An argparse type: a path, not empty (an empty string would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, not an empty string")
    return Path(text)


def study_name(text: str) -> str:
    """An argparse type: a name that is safe as a folder's name (spec.names.check_name)."""
    try:
        return check_name(text, "study name")
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def arch_names(text: str) -> str:
    """An argparse type for --archs: comma-separated names, none empty or repeated (checked against the registry
    later, when the plugins are loaded)."""
    names = [a.strip() for a in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated architecture names, not {text!r}")
    twice = sorted({a for a in names if names.count(a) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} named twice")
    return text


MAX_THREADS = 1024  # torch threads per worker: more than any machine's cores
MAX_BENCH_ROUNDS = 100  # bench draws every round's pairs up front (about 20 MB a round at 28x28)


def add_data_dir(p):
    p.add_argument("--data-dir", type=path, default=None,
                   help="MNIST cache folder (default: $DIGITPAIRS_DATA, else ~/.cache/digitpairs/mnist)")


def add_device(p, d: Config) -> None:
    """bench's device flags: --device, --[no-]cuda-graphs and --matmul-conv."""
    p.add_argument("--device", default=None,
                   help=f"where training runs: auto (the GPU when PyTorch sees one), cpu, cuda or cuda:N (default: "
                        f"{d.device})")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="on a GPU, capture each group's training step once in a CUDA graph and replay it (fewer "
                        "kernel launches; the same training as the plain GPU path, to rounding). Default: on where "
                        "training runs on a GPU; --no-cuda-graphs launches every kernel as it comes")
    p.add_argument("--matmul-conv", action="store_true", default=None,
                   help="the convolutions as batched matmuls over unfolded patches instead of grouped convolutions "
                        "(the same function, summed in another order; slower on the CPU and on an H200, an option for "
                        "other GPUs)")


def build_parser() -> Parser:
    d = Config()
    parser = Parser(prog="digitpairs", description=DESCRIPTION)
    parser.add_argument("--version", action="store_true",
                        help="print the version, the code hash, torch's version and where training runs, and exit")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)  # one is required but with --version (main)

    data = sub.add_parser("data", help="fetch and verify MNIST")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    add_data_dir(data_sub.add_parser("fetch", help="fetch the four IDX files into the cache and verify them"))

    ls = sub.add_parser("list", help="the registered architectures: objective, head, branch, #params")
    ls.add_argument("--size", type=int, default=d.size, choices=(14, 28), help=f"image side (default: {d.size})")

    rep = sub.add_parser("reproduce", help="the report's study (the shipped studies/paper.toml), then its report")
    run = sub.add_parser("run", help="a study from a TOML file, then its report")
    run.add_argument("study_file", type=path,
                     help=f"a study file (.toml), or the name of a shipped study: {', '.join(shipped_names())}")
    for p in (rep, run):
        add_study_flags(p)
    rep.add_argument("--archs", type=arch_names, default=None,
                     help="comma-separated architecture names (default: the report's six and ws_bn_aug_bayes; see "
                          "`digitpairs list`)")

    bench = sub.add_parser("bench", help="the plain reference loop against the engine, side by side")
    bench.add_argument("--arch", default="siamese_ws_aux", help="architecture (default: siamese_ws_aux)")
    bench.add_argument("--size", type=int, default=d.size, choices=(14, 28),
                       help=f"image side, 28 or 14 (default: {d.size})")
    bench.add_argument("--epochs", type=positive_int, default=5, help="epochs per round (default: 5)")
    bench.add_argument("--rounds", type=at_most(MAX_BENCH_ROUNDS), default=10,
                       help=f"rounds, trained together by the engine, up to {MAX_BENCH_ROUNDS} (default: 10)")
    bench.add_argument("--precision", choices=CHOICES["precision"], default=d.precision,
                       help=f"the engine's precision (default: {d.precision})")
    add_device(bench, d)
    add_data_dir(bench)

    rpt, ver, ml = add_reading(sub)
    pred = add_predict(sub)
    for p in (ls, rep, run, bench, rpt, ver, ml, pred):
        p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                       help="import a module (name or .py path) that registers more architectures; repeatable")
    return parser


def add_reading(sub) -> tuple:
    """The commands that read the store: report, verify, studies, compare, export mlflow; returns the parsers of
    report, verify and export mlflow (those that take --plugin)."""
    store_help = f"SQLite results store (default: {DEFAULT_STORE})"
    rpt = sub.add_parser("report", help="tables and figures of a study, from the store")
    rpt.add_argument("--store", type=path, default=DEFAULT_STORE, help=store_help)
    rpt.add_argument("--study", default=None, help="study name (default: the newest in the store)")
    rpt.add_argument("--out", type=path, default=None, help="report folder (default: STUDY beside the store)")
    ver = sub.add_parser("verify", help="did the study reproduce the report? a verdict per variant and claim",
                         epilog="Exit status: 0 when no claim of the study file is contradicted and no variant is "
                                "below the report's figure; 1 otherwise (a CI job can hold a reproduction with it); "
                                "2 for bad input.")
    ver.add_argument("--store", type=path, default=DEFAULT_STORE, help=store_help)
    ver.add_argument("--study", default=None, help="study name (default: the newest in the store)")
    ver.add_argument("--json", action="store_true", help="the scorecard as JSON on standard output")
    sts = sub.add_parser("studies", help="every study in a store: variants, rounds, code, devices, last update")
    sts.add_argument("--store", type=path, default=DEFAULT_STORE, help=store_help)
    sts.add_argument("--json", action="store_true", help="as JSON on standard output")
    cmp = sub.add_parser("compare", help="two studies paired by variant and round seed (in one store or two)")
    cmp.add_argument("study_a", help="the first study")
    cmp.add_argument("study_b", help="the second study (differences are second minus first)")
    cmp.add_argument("--store", type=path, default=DEFAULT_STORE, help=store_help)
    cmp.add_argument("--store-b", type=path, default=None, help="the second study's store (default: --store)")
    cmp.add_argument("--json", action="store_true", help="as JSON on standard output")
    for p in (rpt, ver):
        p.add_argument("--chance-margin", type=fraction, default=DIAGNOSIS.chance_margin,
                       help="a round whose test accuracy is at most this above always giving the commoner answer is "
                            f"flagged as failed (default: {DIAGNOSIS.chance_margin})")
        p.add_argument("--min-loss-drop", type=fraction, default=DIAGNOSIS.min_loss_drop,
                       help="a round whose training loss fell by less than this share from the first epoch to the "
                            f"last is flagged as failed (default: {DIAGNOSIS.min_loss_drop})")
    exp = sub.add_parser("export", help="export the store to another tool")
    exp_sub = exp.add_subparsers(dest="export_command", required=True, parser_class=Parser)
    ml = exp_sub.add_parser("mlflow", help="every run as an MLflow run (needs digitpairs[mlflow])")
    ml.add_argument("--store", type=path, default=DEFAULT_STORE, help=store_help)
    ml.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: sqlite:///STORE_FOLDER/mlflow.db, artifacts beside it)")
    ml.add_argument("--study", action="append", default=None, help="a study to export (default: all); repeatable")
    return rpt, ver, ml


def add_study_flags(rep) -> None:
    """The flags of run and reproduce: the study's rounds, name, store and workers, then every Config field's."""
    rep.add_argument("--quick", action="store_true",
                     help=f"few pairs, epochs and rounds ({QUICK}, {QUICK_ROUNDS} rounds): the whole path in seconds")
    rep.add_argument("--rounds", type=at_most(MAX_ROUNDS),
                     help=f"rounds per architecture, up to {MAX_ROUNDS} (default: the study's)")
    rep.add_argument("--study", type=study_name, default=None,
                     help="study name in the store: letters, digits and _ - . , = + [ ] (default: the study file's "
                          "name plus the overridden fields)")
    rep.add_argument("--store", type=path, default=DEFAULT_STORE, help=f"SQLite results store (default: {DEFAULT_STORE})")
    rep.add_argument("--out", type=path, default=None, help="report folder (default: STUDY beside the store)")
    rep.add_argument("--workers", type=positive_int, default=None,
                     help=f"worker processes (default: one per core, here {os.cpu_count()})")
    rep.add_argument("--threads", type=at_most(MAX_THREADS), default=None,
                     help="torch threads per worker, each training its own group of rounds (default: cores / "
                          "workers); with --backend ray, the CPUs each task declares and uses (default: 1)")
    rep.add_argument("--batch-rounds", type=positive_int, default=10,
                     help="rounds of one architecture in one unit of work (the engine trains them in groups of a "
                          "few rounds, each group one batched model) (default: 10)")
    rep.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local: worker processes here; ray: each unit a Ray task (needs digitpairs[ray])")
    rep.add_argument("--address", default=None,
                     help="with --backend ray: the cluster's HOST:PORT (default: start Ray here)")
    rep.add_argument("--checkpoint-every", type=non_negative_int, default=1, metavar="N",
                     help="save each group's state after every N epochs, beside the store, so that the same command "
                          "after a kill resumes it from there; 0: no checkpoints (default: 1)")
    rep.add_argument("--mlflow", default=None, metavar="URI",
                     help="log each run to this MLflow tracking URI as it is stored, so that MLflow's UI follows "
                          "the study (default: $MLFLOW_TRACKING_URI where set; needs digitpairs[mlflow])")
    rep.add_argument("--no-keep-models", dest="keep_models", action="store_false",
                     help="store no trained weights (by default every run's model is kept in the store)")
    add_data_dir(rep)
    add_config_flags(rep)


CONFIG_FLAGS = tuple(f.name for f in dataclasses.fields(Config))  # a flag each: --n-pairs for n_pairs
COUNTS = ("epochs", "n_pairs", "n_test", "batch_size")  # int fields whose flag refuses values below 1 itself
GROUP_NOTES = {"run options": "how a study runs, not what it trains: not part of the study's name"}


def config_overrides(args) -> dict:
    """{field: value} of the Config flags given on the command line."""
    return {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) is not None}


def channels(text: str) -> tuple[int, int]:
    """An argparse type: two comma-separated integers, e.g. 16,32 (Config.validate checks their range)."""
    parts = text.split(",")
    try:
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected two comma-separated integers such as 16,32, not {text!r}")


def flag_kind(f: dataclasses.Field) -> dict:
    """add_argument's keywords for a Config field's flag: its choices, bool action or type."""
    if f.name in CHOICES:
        return {"choices": CHOICES[f.name]}
    if f.type is bool:
        return {"action": argparse.BooleanOptionalAction}
    if f.type in (int, float):
        return {"type": positive_int if f.name in COUNTS else f.type}
    return {"type": channels, "metavar": "C1,C2"} if f.type is not str else {}


def shown(value) -> str:
    """A default as its flag takes it: 16,32 for a pair, true or false for a bool."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def add_config_flags(p) -> None:
    """A flag for every Config field, in the argument groups of config.GROUPS, each with the field's comment as its
    help; None where absent (the study file's value stays). Config.validate checks the values' ranges."""
    d, helps, fields = Config(), comments(), {f.name: f for f in dataclasses.fields(Config)}
    for title, names in GROUPS.items():
        group = p.add_argument_group(title, GROUP_NOTES.get(title))
        for name in names:
            text = f"{helps[name]} (default: {shown(getattr(d, name))})".replace("%", "%%")
            group.add_argument("--" + name.replace("_", "-"), default=None, help=text, **flag_kind(fields[name]))


def add_predict(subparsers, store_default: Path = DEFAULT_STORE, path_type=path):
    """The `predict` subcommand on the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser("predict", help="read two digit images (or a CSV of pairs) with a kept model")
    p.add_argument("images", nargs="*", type=path_type, metavar="IMAGE",
                   help="the first and the second image (PNG or JPEG, any size, dark on light or light on dark)")
    p.add_argument("--pairs", type=path_type, default=None, metavar="FILE.csv",
                   help="a CSV with columns first,second (image paths relative to it) instead of two images")
    p.add_argument("--out", type=path_type, default=None,
                   help="with --pairs: write the CSV with the answers here (default: standard output)")
    p.add_argument("--store", type=path_type, default=store_default,
                   help=f"SQLite results store (default: {store_default})")
    p.add_argument("--study", default=None, help="study name (default: the newest in the store)")
    p.add_argument("--arch", default=None,
                   help="variant, as named in the study's table (default: the study file's model, else the best by "
                        "validation accuracy among those with kept models)")
    p.add_argument("--round", type=int, default=None,
                   help="one round's model (default: every kept round of the variant, as an ensemble)")
    return p
