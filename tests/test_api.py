"""The Python API (digitpairs/api.py): run a study, read its runs, and the README's example of it."""

import dataclasses
import importlib.util
import json
import re
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest

import digitpairs as dp
from digitpairs.cli.main import main
from tests.support import fill, write_study

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE_MARK = "<!-- python-api-example:"
QUIET = {"log": lambda *a: None}  # run_study's progress lines
ARCHS = ("siamese_ws", "siamese_ws_aux")


@pytest.fixture(scope="module")
def small(tmp_path_factory, real_data_dir):
    """The paper's quick study cut to two variants, one epoch and two rounds, run into a fresh store."""
    study = dp.load_study("paper", quick=True, overrides={"epochs": 1})
    study = dataclasses.replace(study, variants=tuple(v for v in study.variants if v.name in ARCHS))
    store = tmp_path_factory.mktemp("api") / "s.sqlite"
    return study, dp.run(study, store, rounds=2, data_dir=real_data_dir, **QUIET)


def filled(tmp_path) -> Path:
    """A store of study "st" (tests.support.SPEC: 3 rounds planned) with runs of a (rounds 0, 1) and b (round 0)."""
    store = dp.Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.8, 0.9], "b": [0.7, None]})
    store.close()
    return tmp_path / "s.sqlite"


@pytest.mark.slow
def test_run_trains_every_variant_and_round_and_returns_their_records(small):
    _, res = small
    assert (res.study, res.store.name) == ("paper-quick", "s.sqlite")
    assert res.report == res.store.parent / "paper-quick" and (res.report / "report.md").is_file()
    records = res.records()
    assert sorted((r["variant"], r["round"]) for r in records) == [(a, r) for a in ARCHS for r in range(2)]
    assert json.loads(json.dumps(records)) == records  # plain Python values
    assert all(len(r["curves"]) == 1 and r["curves"][0]["epoch"] == 1 for r in records)
    assert all(0 <= r["test_acc"] <= 1 and r["n_params"] > 0 and r["config"]["config"]["epochs"] == 1
               for r in records)


@pytest.mark.slow
def test_the_table_has_a_row_per_variant_with_the_reports_statistics(small):
    _, res = small
    rows = res.table()
    assert [r["variant"] for r in rows] == list(ARCHS)
    for row in rows:
        accs = [r["test_acc"] for r in res.records() if r["variant"] == row["variant"]]
        assert row["n"] == 2 and row["missing"] == [] and row["mean"] == pytest.approx(sum(accs) / 2)
        assert row["sd"] >= 0 and row["ci_low"] <= row["mean"] <= row["ci_high"] and row["n_params"] > 0


@pytest.mark.slow
def test_a_second_run_trains_nothing_and_returns_the_same_records(small, real_data_dir):
    study, res = small
    lines = []
    again = dp.run(study, res.store, rounds=2, data_dir=real_data_dir, report=False, log=lines.append)
    assert again == dataclasses.replace(res, report=None)
    assert again.records() == res.records()
    assert any("already in" in line for line in lines)


@pytest.mark.slow
def test_a_kept_model_loads_from_the_results(small):
    _, res = small
    net, cfg, (mean, std) = res.load_model("siamese_ws_aux", round=1)
    assert cfg.epochs == 1 and net.k == cfg.members and mean > 0 and std > 0
    with pytest.raises(dp.UserError, match="no kept model of variant 'transfer'"):
        res.load_model("transfer")


def test_frame_is_a_dataframe_of_the_records_where_pandas_is_installed(tmp_path):
    pytest.importorskip("pandas")
    path = filled(tmp_path)
    df = dp.Results("st", path).frame()
    assert len(df) == 3 and list(df["variant"]) == ["a", "a", "b"] and list(df["test_acc"]) == [0.8, 0.9, 0.7]
    assert dp.frame(path).equals(df)


def test_frame_without_pandas_says_how_to_install_it(tmp_path, monkeypatch):
    path = filled(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas fails, as where it is not installed
    for call in (dp.Results("st", path).frame, lambda: dp.frame(path)):
        with pytest.raises(dp.UserError, match="pip install pandas") as e:
            call()
        assert "\n" not in str(e.value)


def test_runs_reads_a_store_by_path_its_newest_study_by_default(tmp_path):
    path = filled(tmp_path)
    found = dp.runs(path)
    assert [(r["study"], r["variant"], r["round"], r["test_acc"]) for r in found] == [
        ("st", "a", 0, 0.8), ("st", "a", 1, 0.9), ("st", "b", 0, 0.7)]
    assert found[0]["curves"] == [{"epoch": 1, "train_cmp": 0.5, "train_loss": 0.5, "val_acc": None, "test_acc": 0.8}]
    assert dp.runs(str(path), "st") == found
    assert [(r["variant"], r["n"], r["missing"], r["mean"]) for r in dp.Results("st", path).table()] == [
        ("a", 2, [2], pytest.approx(0.85)), ("b", 1, [1, 2], 0.7)]


def test_reading_a_store_loads_no_torch(tmp_path):
    path = str(filled(tmp_path))
    code = (f"import sys, digitpairs as dp\nassert dp.runs({path!r})\nassert dp.Results('st', {path!r}).table()\n"
            "assert not {'torch', 'matplotlib'} & set(sys.modules), 'loaded'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.parametrize(("call", "expected"), [
    (lambda tmp: dp.run("no_such_study", tmp / "s.sqlite"), "no study file no_such_study"),
    (lambda tmp: dp.run(3, tmp / "s.sqlite"), "study must be a shipped study's name"),
    (lambda tmp: dp.run(dp.load_study("paper"), tmp / "s.sqlite", quick=True), "a Study runs as it is"),
    (lambda tmp: dp.run("paper", tmp / "s.sqlite", overrides={"epochs": 0}), "epochs"),
    (lambda tmp: dp.run("paper", tmp / "s.sqlite", overrides=["epochs"]), "overrides must be a dict"),
    (lambda tmp: dp.run("paper", tmp / "s.sqlite", rounds=0), "rounds must be a whole number"),
    (lambda tmp: dp.run("paper", tmp / "s.sqlite", workers=0), "workers must be"),
    (lambda tmp: dp.run("paper", tmp / "s.sqlite", thread=2), "run() takes no option 'thread'"),
    (lambda tmp: dp.runs(tmp / "none.sqlite"), "no store at"),
])
def test_a_mistake_in_the_arguments_is_one_line_before_anything_is_stored(tmp_path, call, expected):
    with pytest.raises(dp.UserError, match=re.escape(expected)) as e:
        call(tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "s.sqlite").exists()


def test_an_unknown_study_in_a_store_names_the_studies_there(tmp_path):
    with pytest.raises(dp.UserError, match="no study 'other' .*: choose from st$"):
        dp.runs(filled(tmp_path), "other")


@pytest.mark.slow
def test_a_study_file_runs_with_overrides_and_its_report_where_asked(tmp_path, real_data_dir):
    path = write_study(tmp_path, 'archs = ["siamese_ws"]\n')
    res = dp.run(path, tmp_path / "s.sqlite", quick=True, overrides={"epochs": 1, "device": "cpu"}, rounds=1,
                 data_dir=real_data_dir, report=tmp_path / "mine", **QUIET)
    assert res.study == "study-quick-epochs1"  # device says how it runs, not what: not in the name
    assert res.report == tmp_path / "mine" and "study-quick-epochs1" in (tmp_path / "mine" / "report.md").read_text()
    assert [(r["variant"], r["round"]) for r in dp.runs(res.store)] == [("siamese_ws", 0)]


def test_the_api_names_a_study_as_the_command_line_does(tmp_path, monkeypatch):
    """`digitpairs run FILE --quick --epochs 1 ...` and run(FILE, quick=True, overrides=...) train the same study."""
    names = []

    def stop(study, *args, **options):  # the study as it would train; nothing trains
        names.append(study.name)
        raise KeyboardInterrupt

    monkeypatch.setattr("digitpairs.cli.run.run_study", stop)
    monkeypatch.setattr("digitpairs.runner.study.run_study", stop)
    path = write_study(tmp_path, 'archs = ["siamese_ws"]\n')
    flags = ["--epochs", "1", "--lr", "0.002", "--channels", "8,16", "--no-swap", "--device", "cpu"]
    assert main(["run", str(path), "--quick", *flags, "--store", str(tmp_path / "cli.sqlite")]) == 130
    overrides = {"epochs": 1, "lr": 0.002, "channels": (8, 16), "swap": False, "device": "cpu"}
    with pytest.raises(KeyboardInterrupt):
        dp.run(path, tmp_path / "api.sqlite", quick=True, overrides=overrides)
    assert names == ["study-quick-channels8x16-epochs1-lr0.002-swapfalse"] * 2  # device: how it runs, not what


def readme_example() -> str:
    """The README's Python API example: the code block after its marker comment."""
    text = README.read_text()
    assert EXAMPLE_MARK in text, "the README lost its Python API example"
    block = text[text.index(EXAMPLE_MARK):].split("```python\n", 1)[1]
    return block.split("```", 1)[0]


@pytest.mark.slow
def test_the_readmes_python_api_example_runs(tmp_path, real_data_dir, monkeypatch):
    """The example as written, with the store in tmp_path; where pandas is not installed, a stand-in for it."""
    code = readme_example()
    assert code.count('"runs/digitpairs.sqlite"') == 2 and "quick=True" in code
    code = code.replace('"runs/digitpairs.sqlite"', repr(str(tmp_path / "s.sqlite")))
    if importlib.util.find_spec("pandas") is None:
        fake = types.SimpleNamespace(DataFrame=types.SimpleNamespace(from_records=list))
        monkeypatch.setitem(sys.modules, "pandas", fake)
    example = tmp_path / "example.py"
    example.write_text(code)
    names = runpy.run_path(str(example))
    assert names["res"].report == tmp_path / "paper-quick" and (tmp_path / "paper-quick" / "report.md").is_file()
    assert len(names["df"]) == 7 * 2  # the paper's variants x the quick rounds
    assert names["cfg"].n_pairs == 200 and names["first"]["study"] == "paper-quick"
