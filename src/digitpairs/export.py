"""Export the store to MLflow: one MLflow experiment per study, one MLflow run per stored run.

Each run carries its resolved config and sweep point as params, its per-epoch curves as step metrics, and its final
accuracies; one extra run per study carries the study's report and figures as artifacts. Runs are tagged with their
store key (study/variant/round), so exporting again adds only what is new.
"""

import tempfile
import time
from pathlib import Path

from digitpairs import UserError
from digitpairs.report import write_report
from digitpairs.store import Store

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


def export(store: Store, tracking_uri: str, studies: list[str] | None = None, log=print) -> int:
    """Export the studies (default: all) to the tracking server or store; return the number of runs added."""
    mlflow, Metric, Param = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    local_root = Path(tracking_uri.removeprefix("sqlite:///")).parent if tracking_uri.startswith("sqlite:///") else None
    added = 0
    for study in studies or store.studies():
        name = f"digitpairs/{study}"
        exp = client.get_experiment_by_name(name)
        if exp is None:
            artifacts = (local_root / "mlartifacts" / study).resolve().as_uri() if local_root else None
            exp_id = client.create_experiment(name, artifact_location=artifacts)
        else:
            exp_id = exp.experiment_id
        have = {r.data.tags.get(KEY) for r in client.search_runs([exp_id], max_results=50000)}
        curves: dict[tuple, list[dict]] = {}
        for c in store.curves(study):
            curves.setdefault((c["arch"], c["round"]), []).append(c)
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
            client.set_terminated(created.info.run_id)
            added += 1
        if f"{study}/report" not in have:
            created = client.create_run(exp_id, run_name=f"{study} report", tags={KEY: f"{study}/report", "study": study})
            with tempfile.TemporaryDirectory() as tmp:
                write_report(store, study, Path(tmp))
                for f in sorted(Path(tmp).iterdir()):
                    client.log_artifact(created.info.run_id, str(f))
            client.set_terminated(created.info.run_id)
        log(f"mlflow: study {study!r} -> experiment {name!r}")
    return added
