"""Did it reproduce: a verdict per variant and claim, the claims as a family of their own, the smallest difference
the rounds detect, failed rounds flagged with what the study says without them, and `digitpairs verify`'s exit."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from digitpairs.analysis.claims import judge
from digitpairs.analysis.compare import compare, summarise
from digitpairs.analysis.diagnose import flagged
from digitpairs.analysis.stats import detectable
from digitpairs.analysis.verify import row_verdict, scorecard
from digitpairs.cli.main import main
from digitpairs.spec.diagnosis import Diagnosis
from digitpairs.spec.records import RunResult
from digitpairs.store import Store


def spec(names, rounds, claims=(), report=None):
    report = report or {}
    return {"rounds": rounds, "select": None, "claims": list(claims), "variants": [
        {"name": n, "base": n, "sweep": {}, "config": {"n_test": 1000},
         "arch": {"label": n.upper(), "head": "mlp", "objective": "comparison", "report": report.get(n)}}
        for n in names]}


def store_with(tmp_path, accs: dict[str, list[float]], claims=(), report=None, losses=None) -> Store:
    """A store with study "st": each variant's rounds at these accuracies (losses: per variant, per round, the
    training loss of epochs 1 and 2)."""
    store = Store(tmp_path / "s.sqlite")
    store.ensure_study("st", spec(list(accs), len(next(iter(accs.values()))), claims, report))
    for name, values in accs.items():
        runs = []
        for r, acc in enumerate(values):
            first, last = (losses or {}).get(name, {}).get(r, (0.7, 0.3))
            curve = [{"epoch": e, "train_cmp": loss, "train_loss": loss, "val_acc": None, "test_acc": acc}
                     for e, loss in ((1, first), (2, last))]
            runs.append(RunResult(r, r, acc, None, 10, 1.0, 1, curve, round(acc * 1000), 1000))
        store.add_runs("st", name, {}, runs)
    return store


def test_a_variant_reproduces_where_the_reports_mean_is_in_its_interval():
    row = {"arch": "a", "label": "A", "mean": 0.80, "ci_low": 0.78, "ci_high": 0.82, "report_mean": 0.79,
           "report_sd": 0.01, "accs": {0: 0.79, 1: 0.81}}
    assert row_verdict(row)["verdict"] == "reproduced"
    above = row_verdict(row | {"report_mean": 0.70})
    assert above["verdict"] == "above" and above["points"] == pytest.approx(10) and above["report_sds"] == pytest.approx(10)
    assert "the report's own figure is the outlier" in above["reason"]
    below = row_verdict(row | {"report_mean": 0.90})
    assert below["verdict"] == "below" and "outlier" not in below["reason"] and "every round is below" in below["reason"]


def test_the_claims_are_corrected_over_their_own_family_not_every_pair():
    """Four variants make 6 pairs; the study file claims 2 of them: their p-values are Holm-corrected over 2."""
    counts = {"a": [950, 955, 948, 952, 957, 951], "b": [940, 946, 941, 942, 949, 940],
              "c": [900, 905, 899, 903, 902, 906], "d": [850, 860, 855, 851, 858, 853]}
    rows = summarise(spec(list(counts), 6), [
        {"arch": n, "round": r, "test_acc": c / 1000, "val_acc": None, "n_params": 1, "wall_s": 1.0,
         "test_correct": c, "config": {"config": {"n_test": 1000}}} for n, cs in counts.items() for r, c in enumerate(cs)])
    comps = compare(rows, 6)
    claims = [{"text": "a", "better": "a", "worse": "b"}, {"text": "c", "better": "c", "worse": "d"}]
    judged = judge(claims, rows, comps)
    raw = [next(c for c in comps if {c["a"]["arch"], c["b"]["arch"]} == set(pair))["p_t"] for pair in ("ab", "cd")]
    assert sorted(j["p"] for j in judged) == pytest.approx(sorted([min(2 * min(raw), 1), max(2 * min(raw), max(raw))]))
    assert all(j["detectable"] > 0 for j in judged) and len(comps) == 6


def test_the_detectable_difference_has_80_percent_power():
    """At the detectable difference, a two-sided paired t-test at 5% rejects with probability 0.8 (the noncentral
    t's, within the approximation)."""
    for n in (5, 10, 30):
        d = detectable(1.0, n)
        crit = stats.t.ppf(0.975, n - 1)
        power = 1 - stats.nct.cdf(crit, n - 1, d * math.sqrt(n)) + stats.nct.cdf(-crit, n - 1, d * math.sqrt(n))
        assert power == pytest.approx(0.8, abs=0.03)
    assert math.isnan(detectable(1.0, 1))


def test_failed_rounds_are_flagged_by_the_stated_rule():
    runs = [{"arch": "a", "round": r, "test_acc": acc} for r, acc in enumerate([0.90, 0.57, 0.91, float("nan")])]
    curves = [{"arch": "a", "round": r, "epoch": e, "train_loss": loss}
              for r, pair in enumerate([(0.7, 0.3), (0.7, 0.3), (0.7, 0.69), (0.7, 0.3)]) for e, loss in enumerate(pair, 1)]
    found = {"a": {1: {"classes": np.array([[0, 1]] * 57 + [[1, 0]] * 43)}}}
    failed = flagged(runs, curves, found)
    assert set(failed) == {("a", 1), ("a", 2), ("a", 3)}
    assert "near chance" in failed[("a", 1)] and "never fell" in failed[("a", 2)] and "NaN" in failed[("a", 3)]
    assert flagged(runs, curves, found, Diagnosis(chance_margin=0.0, min_loss_drop=0.0)).keys() == {("a", 3), ("a", 1)}


def test_a_failed_round_is_flagged_and_the_claim_it_decides_is_named(tmp_path, capsys):
    """One round of b at chance turns "b beats a" around: the scorecard keeps the round, flags it, and says that
    without it the claim would be confirmed; verify's JSON and the report say the same."""
    from digitpairs.report.write import write_report

    a = [0.850, 0.852, 0.848, 0.851, 0.849, 0.850, 0.853, 0.847]
    b = [0.870, 0.871, 0.869, 0.556, 0.872, 0.868, 0.870, 0.873]
    claims = [{"text": "B beats A.", "better": "b", "worse": "a"}]
    store = store_with(tmp_path, {"a": a, "b": b}, claims, report={"a": [0.851, 0.002, 10], "b": [0.87, 0.002, 10]})
    card = scorecard(store.study_config("st"), store.runs("st"), store.curves("st"), {})
    assert [(f["variant"], f["round"]) for f in card["failed"]] == [("b", 3)]
    assert card["claims"][0]["verdict"] == "not confirmed"
    assert card["sensitivity"]["changed"] == [{"text": "B beats A.", "before": "not confirmed", "after": "confirmed"}]
    out = tmp_path / "report"
    write_report(store, "st", out)
    text = (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())
    assert data["failed_rounds"][0]["round"] == 3 and "b round 3: test accuracy 0.5560, near chance" in text
    assert "| 3 |" in (out / "table.md").read_text()  # the table's column of failed rounds
    for v in data["variants"]:
        assert f"{v['label']}: {v['verdict']}: {v['reason']}." in text
    assert f"Claim \"B beats A.\": {data['claims'][0]['verdict']}" in text
    assert "would be confirmed (it is not confirmed)" in text
    html = (out / "report.html").read_text()
    assert "<code>b</code>" in html and "`b`" not in html
    store.close()
    assert main(["verify", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "failed round: b round 3" in capsys.readouterr().out
    assert main(["verify", "--store", str(tmp_path / "s.sqlite"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed_rounds"] == data["failed_rounds"]


def test_verify_exits_1_where_a_claim_is_contradicted_or_a_variant_is_below_the_report(tmp_path, capsys):
    a = [0.850, 0.852, 0.848, 0.851, 0.849, 0.850]
    b = [0.800, 0.801, 0.799, 0.802, 0.798, 0.800]
    store = store_with(tmp_path, {"a": a, "b": b}, [{"text": "B beats A.", "better": "b", "worse": "a"}])
    store.close()
    assert main(["verify", "--store", str(tmp_path / "s.sqlite")]) == 1
    assert "claim \"B beats A.\": contradicted" in capsys.readouterr().out
    below = store_with(tmp_path / "2", {"a": a}, report={"a": [0.90, 0.01, 10]})
    below.close()
    assert main(["verify", "--store", str(tmp_path / "2" / "s.sqlite"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["holds"] is False and data["variants"][0]["verdict"] == "below"
    assert main(["verify", "--store", str(tmp_path / "none.sqlite")]) == 2


def test_studies_lists_a_store_and_compare_pairs_two_studies_by_round_seed(tmp_path, capsys):
    """Two studies of the same variant in two stores, the second with one round better and another code: the
    difference is paired by round seed, the rounds won are counted, and what sets them apart is named."""
    a = store_with(tmp_path / "cpu", {"a": [0.850, 0.852, 0.848]})
    b = store_with(tmp_path / "gpu", {"a": [0.850, 0.862, 0.848]})
    b.db.execute("UPDATE runs SET device = 'NVIDIA H200'")
    a.close()
    b.close()
    assert main(["studies", "--store", str(tmp_path / "cpu" / "s.sqlite")]) == 0
    assert "st: 1 variants (a), 3/3 runs" in capsys.readouterr().out
    assert main(["compare", "st", "st", "--store", str(tmp_path / "cpu" / "s.sqlite"),
                 "--store-b", str(tmp_path / "gpu" / "s.sqlite"), "--json"]) == 0
    (d,) = json.loads(capsys.readouterr().out)["variants"]
    assert d["rounds"] == 3 and d["b_won"] == 1 and d["a_won"] == 0 and d["diff"] == pytest.approx(0.01 / 3)
    assert d["differ"] == ["device"]
    assert main(["compare", "st", "nope", "--store", str(tmp_path / "cpu" / "s.sqlite")]) == 2
