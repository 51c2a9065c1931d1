"""The Python API: run a study as `digitpairs run` does, and read a store's runs as plain Python values.

    import digitpairs as dp
    res = dp.run("paper", quick=True)   # trains what runs/digitpairs.sqlite lacks; report in runs/paper-quick
    res.records()                       # one dict per stored run: variant, round, seed, test_acc, ..., curves
    res.table()                         # one dict per variant: mean, SD, n, #params
    res.frame()                         # the records as a pandas DataFrame (pip install pandas)
    net, cfg, (mean, std) = res.load_model("siamese_ws_aux", round=0)
    dp.runs("runs/digitpairs.sqlite")   # a store's newest study, without running anything

Reading a store loads no torch: run() and load_model() import the engine when they are called.
"""

import dataclasses
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

from digitpairs.analysis.compare import summarise
from digitpairs.base.errors import UserError
from digitpairs.spec import plugins, studyfile
from digitpairs.spec.config import MAX_ROUNDS
from digitpairs.spec.names import check_name
from digitpairs.spec.studyfile import Study, load_study
from digitpairs.store import Store

DEFAULT_STORE = "runs/digitpairs.sqlite"  # the command line's default --store
SUMMARY = {"arch": "variant", "label": "label", "mean": "mean", "sd": "sd", "ci_low": "ci_low", "ci_high": "ci_high",
           "rounds": "n", "missing": "missing", "n_params": "n_params", "val_mean": "val_mean", "val_sd": "val_sd",
           "wall_s": "wall_s"}  # analysis.compare.summarise's row -> Results.table()'s


@dataclass(frozen=True)
class Results:
    """A study in a store, as run() returns it: its runs, its per-variant summary and its kept models. Every method
    reads the store afresh."""
    study: str  # the study's name in the store
    store: Path  # the store's path
    report: Path | None = None  # the folder run() wrote the report into (None: no report written)

    def records(self) -> list[dict]:
        """One dict per stored run (see runs())."""
        return runs(self.store, self.study)

    def table(self) -> list[dict]:
        """One dict per variant with runs, in the study's order, the numbers of the report's accuracy table: variant,
        label, mean, sd, ci_low, ci_high (the 95% t-interval), n (rounds run), missing (rounds not run yet),
        n_params, val_mean, val_sd, wall_s. SD and interval are nan for one round."""
        return _read(self.store, self.study, _table)

    def frame(self):
        """records() as a pandas DataFrame, one row per run (needs pandas: pip install pandas)."""
        return _frame(self.records())

    def load_model(self, variant: str, round: int = 0):
        """The kept model of one run: (PairNet in eval mode, its Config, the (mean, SD) its images were normalised
        with), as digitpairs.load_model gives it."""
        from digitpairs.predict.kept import load_model  # torch: imported when a model is asked for

        return load_model(self.store, self.study, variant, round)


def run(study, store=DEFAULT_STORE, *, quick: bool = False, overrides: dict | None = None, rounds: int | None = None,
        workers: int = 1, data_dir=None, report=True, **run_options) -> Results:
    """Train what the store lacks of the study, write its report, and return its Results.

    study: a shipped study's name ("paper"), a study file's path, or a Study (load_study's, or built by hand; it runs
    as it is, so quick and overrides are for names and paths). quick: the quick preset, named NAME-quick with 2
    rounds; overrides: Config fields, e.g. {"epochs": 1}, that also enter the name as `digitpairs run` names it
    (NAME-quick-epochs1), the run options (device, cuda_graphs, matmul_conv) excepted; rounds: how many rounds
    (default: the study's); workers: processes that train (default 1; `digitpairs run` starts one per core). MNIST is
    fetched into data_dir (default: the user's cache) where it is not there yet.
    report: True writes it into the folder named after the study beside the store, a path into that folder, False
    writes none. run_options go to runner.study.run_study: threads, batch_rounds, log, backend, address,
    checkpoint_every, keep_models, on_stored. CUDA graphs are used where the study's config asks for them
    (overrides={"cuda_graphs": True}). A second call with the same arguments trains nothing."""
    from digitpairs import device as devices  # torch: imported when a study is run
    from digitpairs.report.write import output_dir, write_report
    from digitpairs.runner.study import run_study

    study = _study(study, quick, overrides, rounds)
    _check_options(run_study, workers, run_options)
    for v in study.variants if run_options.get("backend", "local") != "ray" else ():  # (Ray: the cluster's devices)
        devices.check(v.cfg.device, v.cfg.cuda_graphs)  # a GPU that is not there: one line, before anything is stored
    path = Path(store)
    out = output_dir(path.parent / study.name if report is True else Path(report)) if report else None
    s = Store(path)
    try:
        run_study(study, s, None if data_dir is None else Path(data_dir), workers=workers, **run_options)
        written = write_report(s, study.name, out) if out else None
    finally:
        s.close()
    return Results(study.name, path, written and written.parent)


def _study(study, quick: bool, overrides: dict | None, rounds: int | None) -> Study:
    """The Study that run() trains: loaded and named as `digitpairs run` names it, with `rounds` rounds if given."""
    if isinstance(study, Study):
        if quick or overrides:
            raise UserError("quick and overrides apply to a study's name or file; a Study runs as it is: make it with "
                            "load_study(name, quick=True, overrides={...})")
        check_name(study.name, "the study's name")
        for v in study.variants:  # a Study built by hand: its architectures checked as registering checks them
            v.arch.validate()
    elif isinstance(study, str | os.PathLike):
        if overrides is not None and not isinstance(overrides, dict):
            raise UserError(f"overrides must be a dict of Config fields, e.g. {{'epochs': 1}}, not {overrides!r}")
        plugins.load_installed()  # as `digitpairs run` does: the architectures of installed packages
        loaded = load_study(study, quick=quick, overrides=overrides)
        study = dataclasses.replace(loaded, name=studyfile.run_name(loaded.name, overrides or {}))
    else:
        raise UserError(f"study must be a shipped study's name, a study file's path or a Study, not {study!r}")
    if rounds is None:
        return study
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise UserError(f"rounds must be a whole number in [1, {MAX_ROUNDS}], not {rounds!r}")
    return dataclasses.replace(study, rounds=rounds)


def _check_options(run_study, workers, run_options: dict) -> None:
    """Refuse a worker count below 1 and options that run_study does not take, in one line."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers must be a whole number of processes, at least 1, not {workers!r}")
    known = set(inspect.signature(run_study).parameters) - {"study", "store", "data_dir", "workers"}
    unknown = sorted(set(run_options) - known)
    if unknown:
        raise UserError(f"run() takes no option {unknown[0]!r} (its options: {', '.join(sorted(known))})")


def runs(store, study: str | None = None) -> list[dict]:
    """One dict per stored run of the study (default: the store's newest, as `digitpairs report` chooses), in the
    order they were stored: study, variant, round, seed, test_acc, val_acc, n_params, wall_s, and the store's other
    columns (batch, test_correct, versions, code_hash, git_commit, device, kernels, finished), then config (the
    variant's stored spec: arch, config, sweep) and curves (per epoch: epoch, train_cmp, train_loss, val_acc,
    test_acc). Plain Python values: JSON-ready."""
    return _read(store, study, _records)


def frame(store, study: str | None = None):
    """runs() as a pandas DataFrame, one row per run (needs pandas: pip install pandas)."""
    return _frame(runs(store, study))


def _read(store, study: str | None, read):
    """read(opened store, study) in one read transaction of the store at this path, opened without writing; study
    None: the newest. A missing store, an empty one or an unknown study is one line."""
    s = Store(Path(store), create=False)
    try:
        with s.reading():
            studies = s.studies()
            if not studies:
                raise UserError(f"the store {s.path} holds no study yet: run one first (digitpairs.run)")
            study = study or studies[-1]
            s.study_config(study)  # an unknown study: the studies there, in one line
            return read(s, study)
    finally:
        s.close()


def _records(s: Store, study: str) -> list[dict]:
    curves: dict[tuple[str, int], list[dict]] = {}
    for c in s.curves(study):
        curves.setdefault((c.pop("arch"), c.pop("round")), []).append(c)
    last = ("study", "arch", "config")  # first the study and the variant, last the nested values
    return [{"study": r["study"], "variant": r["arch"]} | {k: v for k, v in r.items() if k not in last}
            | {"config": r["config"], "curves": curves.get((r["arch"], r["round"]), [])} for r in s.runs(study)]


def _table(s: Store, study: str) -> list[dict]:
    rows = summarise(s.study_config(study), s.runs(study))
    return [{new: row[old] for old, new in SUMMARY.items()} for row in rows]


def _frame(records: list[dict]):
    """A pandas DataFrame of these records; pandas is optional, so its absence is one line saying how to get it."""
    try:
        import pandas
    except ImportError:
        raise UserError("frame() needs pandas: pip install pandas (or pip install 'digitpairs[pandas]'); "
                        "records() gives the same rows as dicts") from None
    return pandas.DataFrame.from_records(records)
