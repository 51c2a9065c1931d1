import pytest

from digitpairs.store import Store
from tests.support import fill

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (scripts/test.sh installs it)")


def test_export_to_sqlite_tracking_store_twice_without_duplicates(tmp_path):
    from digitpairs.export.mlflow import export

    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92], "b": [0.95, 0.97, 0.96]})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert export(store, uri, log=lambda *a: None) == 6
    assert export(store, uri, log=lambda *a: None) == 0  # nothing new: nothing added
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("digitpairs/st")
    runs = client.search_runs([exp.experiment_id])
    keys = sorted(r.data.tags["digitpairs.key"] for r in runs)
    assert keys == ["st/a/0", "st/a/1", "st/a/2", "st/b/0", "st/b/1", "st/b/2", "st/report"]
    run = next(r for r in runs if r.data.tags["digitpairs.key"] == "st/b/1")
    assert run.data.metrics["test_acc"] == pytest.approx(0.97) and run.data.params["round"] == "1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch_test_acc")] == [1]
    report = next(r for r in runs if r.data.tags["digitpairs.key"] == "st/report")
    files = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"report.md", "report.html", "curves.png", "table.csv"} <= files


def test_artifacts_stay_in_their_folder_whatever_the_study_name(tmp_path):
    """A store made by an older version may hold a study named like a path: its artifacts go under mlartifacts/."""
    from digitpairs import UserError
    from digitpairs.export.mlflow import artifact_folder, export
    from digitpairs.spec.records import RunResult

    assert artifact_folder("paper-quick") == "paper-quick"
    assert artifact_folder("../escaped").startswith("study-") and "/" not in artifact_folder("../escaped")
    store = Store(tmp_path / "runs" / "s.sqlite")
    store.ensure_study("../escaped", {"rounds": 1, "select": None, "variants": [
        {"name": "a", "base": "a", "sweep": {}, "config": {}, "arch": {"label": "A", "head": "mlp", "report": None}}]})
    store.add_runs("../escaped", "a", {}, [RunResult(0, 0, 0.9, None, 10, 1.0, 1, [])])
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    with pytest.raises(UserError, match="no study 'nope'"):
        export(store, uri, ["nope"], log=lambda *a: None)
    assert export(store, uri, log=lambda *a: None) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert [p.name for p in (tmp_path / "runs" / "mlartifacts").iterdir()] == [artifact_folder("../escaped")]


def test_export_refuses_the_store_itself_and_an_unwritable_place(tmp_path):
    import sqlite3

    from digitpairs import UserError
    from digitpairs.export.mlflow import export

    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91]})
    tables = sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    for uri, match in ((f"sqlite:///{tmp_path / 's.sqlite'}", "is the digitpairs store itself"),
                       (f"sqlite:///{tmp_path / '.' / 's.sqlite-wal'}", "is the digitpairs store itself"),
                       ("sqlite:////proc/mlflow.db", "cannot use the MLflow tracking URI")):
        with pytest.raises(UserError, match=match):
            export(store, uri, log=lambda *a: None)
    store.close()
    after = sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    assert after == tables


def test_an_export_interrupted_midway_is_completed_by_the_next_one(tmp_path, monkeypatch):
    """Killed while it logged a run (here: while it attached the third run's files), an export leaves that run
    unfinished; the next one deletes it and exports it again whole: every run once, each with all it carries."""
    from digitpairs.export import mlflow as exporter

    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92], "b": [0.95, 0.97, 0.96]})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    calls, attach = [], exporter.attach

    def killed(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return attach(*args)

    monkeypatch.setattr(exporter, "attach", killed)
    with pytest.raises(KeyboardInterrupt):
        exporter.export(store, uri, log=lambda *a: None)
    monkeypatch.setattr(exporter, "attach", attach)
    assert exporter.export(store, uri, log=lambda *a: None) == 4  # the unfinished one and the three not begun
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("digitpairs/st").experiment_id])
    keys = sorted(r.data.tags["digitpairs.key"] for r in runs)
    assert keys == ["st/a/0", "st/a/1", "st/a/2", "st/b/0", "st/b/1", "st/b/2", "st/report"]
    assert all(r.info.status == "FINISHED" and "test_acc" in r.data.metrics for r in runs if "report" not in r.info.run_name)


def test_an_error_of_mlflows_is_one_line(tmp_path, monkeypatch):
    from digitpairs import UserError
    from digitpairs.export.mlflow import export

    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91]})

    def refused(self, *args, **kwargs):
        raise mlflow.exceptions.MlflowException("API request failed\nwith a long story")

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", refused)
    with pytest.raises(UserError, match=r"MLflow failed while exporting study 'st' \(MlflowException: API request "
                                        r"failed\): the 0 runs added before are complete") as e:
        export(store, f"sqlite:///{tmp_path / 'mlflow.db'}", log=lambda *a: None)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_study_is_tracked_live_as_it_trains(tmp_path, real_data_dir, monkeypatch):
    """run --mlflow URI: each unit's runs are in MLflow once stored (before the study ends), the report at the
    end: the same runs `export mlflow` makes, which then has nothing to add."""
    from digitpairs.cli.main import main
    from digitpairs.export import mlflow as exporter
    from digitpairs.export.mlflow import export

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen = []
    stored = exporter.Live.stored

    def spy(self, runs):
        stored(self, runs)
        client = mlflow.MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(f"digitpairs/{self.study}")
        seen.append(len(client.search_runs([exp.experiment_id])))

    monkeypatch.setattr(exporter.Live, "stored", spy)
    assert main(["reproduce", "--quick", "--archs", "siamese_ws,transfer", "--batch-rounds", "1", "--workers", "1",
                 "--store", str(tmp_path / "s.sqlite"), "--data-dir", str(real_data_dir), "--mlflow", uri]) == 0
    assert seen == [2, 4]  # a unit (a group of 2 rounds) at a time, each in MLflow as soon as it is stored
    store = Store(tmp_path / "s.sqlite", create=False)
    assert export(store, uri, log=lambda *a: None) == 0  # everything there already, the report too
    store.close()
