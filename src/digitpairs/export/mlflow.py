"""Export the store to MLflow: one MLflow experiment per study, one MLflow run per stored run.

Each run carries its resolved config and sweep point as params, its per-epoch curves as step metrics, and its final
accuracies; one extra run per study carries the study's report and figures as artifacts. Runs are tagged with their
store key (study/variant/round) when they are created, and marked finished only once everything of them is logged:
exporting again adds what is new, and deletes and exports again a run an interrupted export left unfinished. An
error of MLflow's is one line.
"""

import hashlib
import json
import tempfile
import time
from pathlib import Path

from digitpairs.base.errors import UserError, first_line
from digitpairs.base.files import probe
from digitpairs.report.write import write_report
from digitpairs.spec.names import safe_name
from digitpairs.store import Store, weights
from digitpairs.store import files as store_files

KEY = "digitpairs.key"


def _mlflow():
    try:
        import mlflow
        from mlflow.entities import Metric, Param
    except ImportError:
        raise UserError("export mlflow needs MLflow: pip install 'digitpairs[mlflow]'") from None
    return mlflow, Metric, Param


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def artifact_folder(study: str) -> str:
    """The study's folder under mlartifacts/: its name where that is a safe name (spec.names.check_name), else a hash
    of it (a study stored by an older version may have any name), so that nothing is written outside."""
    if safe_name(study):
        return study
    return "study-" + hashlib.sha256(study.encode()).hexdigest()[:16]


def connect(mlflow, tracking_uri: str, store: Path | None = None):
    """(client, the folder beside a SQLite tracking store, or None for a server), checked by a first request, so
    that an unusable URI is one line before anything is written. store: the digitpairs store, which MLflow's
    tables must never go into."""
    local = tracking_uri.startswith("sqlite:")
    path = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else ""
    if local and path.strip() in ("", ":memory:"):
        raise UserError(f"the tracking URI {tracking_uri!r} names no file: pass --tracking-uri sqlite:///PATH/mlflow.db")
    if local and store is not None and Path(path).resolve() in store_files(store):
        raise UserError(f"the tracking URI {tracking_uri!r} is the digitpairs store itself: pass --tracking-uri "
                        "sqlite:///PATH/mlflow.db with another file")
    try:
        if local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            probe(Path(path).parent)  # unwritable: one line, not MLflow's retries
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - MLflow raises many kinds; every one is a URI that does not work here
        raise UserError(f"cannot use the MLflow tracking URI {tracking_uri!r} ({type(e).__name__}: {first_line(e)}): pass "
                        "--tracking-uri sqlite:///PATH/mlflow.db or the http(s) URL of a running server") from None
    return client, Path(path).parent if local else None


def export(store: Store, tracking_uri: str, studies: list[str] | None = None, log=print, report: bool = True) -> int:
    """Export the studies (default: all) to the tracking server or store; return the number of runs added.
    report=False: the runs only (live tracking while a study trains: its report comes at its end)."""
    unknown = [s for s in studies or [] if s not in store.studies()]
    if unknown:
        raise UserError(f"no study {unknown[0]!r} in {store.path}: choose from {', '.join(store.studies()) or 'none'}")
    mlflow, Metric, Param = _mlflow()
    client, local_root = connect(mlflow, tracking_uri, Path(store.path))
    added = 0
    for study in studies or store.studies():
        try:
            with store.reading():  # its runs, curves and models of one moment
                added += export_study(client, store, study, local_root, Metric, Param, report)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - MLflow raises many kinds: each is one line
            raise UserError(f"MLflow failed while exporting study {study!r} ({type(e).__name__}: {first_line(e)}): "
                            f"the {added} runs added before are complete; fix the tracking server, then run the "
                            "same command to finish") from None
        log(f"mlflow: study {study!r} -> experiment 'digitpairs/{study}'")
    return added


def export_study(client, store: Store, study: str, local_root: Path | None, Metric, Param, report: bool = True) -> int:
    """One study as one MLflow experiment; return the number of runs added."""
    name = f"digitpairs/{study}"
    exp = client.get_experiment_by_name(name)
    if exp is None:
        artifacts = (local_root / "mlartifacts" / artifact_folder(study)).resolve().as_uri() if local_root else None
        exp_id = client.create_experiment(name, artifact_location=artifacts)
    else:
        exp_id = exp.experiment_id
    have = set()
    for r in client.search_runs([exp_id], max_results=50000):
        if r.info.status == "FINISHED":
            have.add(r.data.tags.get(KEY))
        elif KEY in r.data.tags:  # an export interrupted while it logged this run: it is done again whole
            client.delete_run(r.info.run_id)
    curves: dict[tuple, list[dict]] = {}
    for c in store.curves(study):
        curves.setdefault((c["arch"], c["round"]), []).append(c)
    added = 0
    for run in store.runs(study):
        key = f"{study}/{run['arch']}/{run['round']}"
        if key in have:
            continue
        created = client.create_run(exp_id, run_name=f"{run['arch']} round {run['round']}",
                                    tags={KEY: key, "study": study, "arch": run["arch"]})
        now = int(time.time() * 1000)
        params = flatten(run["config"]) | {"round": str(run["round"]), "seed": str(run["seed"]),
                                           "torch_version": run["torch_version"],
                                           "package_version": run["package_version"]}
        metrics = [Metric(k, float(run[k]), now, 0) for k in ("test_acc", "val_acc", "n_params", "wall_s")
                   if run[k] is not None]
        for c in curves.get((run["arch"], run["round"]), []):
            metrics += [Metric(f"epoch_{k}", float(c[k]), now, c["epoch"])
                        for k in ("train_cmp", "train_loss", "val_acc", "test_acc") if c[k] is not None]
        params_list = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, max(len(metrics), len(params_list)), 100):  # MLflow's batch limits
            client.log_batch(created.info.run_id, metrics=metrics[i:i + 100], params=params_list[i:i + 100])
        attach(client, created.info.run_id, store, study, run["arch"], run["round"])  # its kept model, if any
        client.set_terminated(created.info.run_id)  # last: a run is finished once everything of it is logged
        added += 1
    if report and f"{study}/report" not in have:
        created = client.create_run(exp_id, run_name=f"{study} report", tags={KEY: f"{study}/report", "study": study})
        with tempfile.TemporaryDirectory() as tmp:
            write_report(store, study, Path(tmp))
            for f in sorted(Path(tmp).iterdir()):
                client.log_artifact(created.info.run_id, str(f))
        client.set_terminated(created.info.run_id)
    return added


def attach(client, run_id: str, store, study: str, arch: str, round: int) -> bool:
    """Log a run's kept model to its MLflow run as artifacts model/weights.pt (the state dict, for
    torch.load(weights_only=True)) and model/model.json (its Config, Arch and normalisation). False: none kept."""
    if not weights.has_table(store.db):
        return False
    row = weights.stored(store.db, study, arch, round)
    if row is None:
        return False
    config, blob, mean, std = row
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "weights.pt").write_bytes(blob)
        meta = json.loads(config) | {"norm": {"mean": mean, "std": std}, "study": study, "variant": arch,
                                      "round": round}
        (Path(tmp) / "model.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        client.log_artifacts(run_id, tmp, "model")
    return True


class Live:
    """Live tracking (`run --mlflow URI`, or MLFLOW_TRACKING_URI set): each unit's runs are logged to MLflow as they
    are stored, the same runs `export mlflow` makes, so that MLflow's UI follows a study while it trains; the report
    comes at its end. A failure of MLflow's during the study is one warning line, and the study goes on: its runs are
    in the store, and the next export (or the end of the study) logs them."""

    def __init__(self, store: Store, tracking_uri: str, study: str, log=print):
        self.store, self.uri, self.study, self.log, self.failed = store, tracking_uri, study, log, False
        connect(_mlflow()[0], tracking_uri, Path(store.path))  # an unusable URI or no MLflow: one line, now

    def stored(self, runs: list) -> None:
        if runs and not self.failed:
            self._export(report=False)

    def finish(self) -> None:
        self._export(report=True)

    def _export(self, report: bool) -> None:
        try:
            export(self.store, self.uri, [self.study], log=lambda *a: None, report=report)
        except UserError as e:
            self.failed = True
            self.log(f"digitpairs: warning: live tracking stopped ({e})")
