"""A study's variants summarised over its rounds, and every two of them compared round by round (the rounds share
their pairs): the numbers the report, the claims and `digitpairs predict` read. No torch, no matplotlib."""

import itertools
import statistics
from fractions import Fraction

from digitpairs.analysis.stats import detectable, holm, mean_ci, paired_t, wilcoxon
from digitpairs.spec.arch import objective_of
from digitpairs.spec.config import Config


def correct(run: dict) -> tuple[int, int]:
    """(correct test pairs, test pairs) of a stored run: the stored count, or, in runs stored without one, the count
    recovered exactly from the accuracy (count / n_test) and the run's n_test (Config's default where its stored
    config lacks the field)."""
    n = run["config"].get("config", {}).get("n_test", Config().n_test)
    count = run.get("test_correct")
    return (count if count is not None else round(run["test_acc"] * n)), n


def summarise(spec: dict, runs: list[dict]) -> list[dict]:
    """One row per variant with runs, in the study's order: accuracy statistics over rounds, the report's figures."""
    rows = []
    for v in spec["variants"]:
        rs = sorted((r for r in runs if r["arch"] == v["name"]), key=lambda r: r["round"])
        if not rs:
            continue
        accs = {r["round"]: r["test_acc"] for r in rs}
        mean, sd, lo, hi = mean_ci(list(accs.values()), bounds=(0, 1))
        vals = [r["val_acc"] for r in rs if r["val_acc"] is not None]
        paper = v["arch"].get("report") or (None, None, None)
        rows.append({
            "arch": v["name"], "label": v["arch"]["label"], "base": v["base"], "sweep": v["sweep"],
            "head": v["arch"]["head"], "objective": objective_of(v["arch"]),
            "mean": mean, "sd": sd, "ci_low": lo, "ci_high": hi, "n_params": rs[0]["n_params"],
            "rounds": len(rs), "missing": [r for r in range(spec["rounds"]) if r not in accs],
            "val_mean": statistics.fmean(vals) if vals else None, "vals": {r["round"]: r["val_acc"] for r in rs},
            "val_sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "wall_s": statistics.fmean(r["wall_s"] for r in rs), "accs": accs,
            "correct": {r["round"]: correct(r) for r in rs},
            "report_mean": paper[0], "report_sd": paper[1], "report_params": paper[2]})
    return rows


def compare(rows: list[dict], rounds: int, left_out: frozenset = frozenset()) -> list[dict]:
    """Paired comparisons of every two variants over the rounds (rounds share data), Holm-corrected over all of
    them (exploratory: the study file's claims are a family of their own, analysis/claims.py). left_out: (variant,
    round) pairs to leave out, each taking its round out of that variant's comparisons (the sensitivity to rounds
    flagged as failed, analysis/diagnose.py)."""
    out = []
    for a, b in itertools.combinations(rows, 2):
        if a["missing"] or b["missing"]:
            gaps = "; ".join(f"{r['label']} lacks round(s) {r['missing']}" for r in (a, b) if r["missing"])
            out.append({"a": a, "b": b, "skip": f"not compared: {gaps}"})
            continue
        paired = [r for r in range(rounds) if (a["arch"], r) not in left_out and (b["arch"], r) not in left_out]
        if len(paired) < 2:
            out.append({"a": a, "b": b, "skip": "not compared: a paired test needs 2 rounds or more"})
            continue
        # each round's difference from the counts, (count_a - count_b) / n_test: the same count, the same number
        exact = [Fraction(*a["correct"][r]) - Fraction(*b["correct"][r]) for r in paired]
        if sum(exact) < 0:  # state every comparison as better minus worse
            a, b, exact = b, a, [-d for d in exact]
        diffs = [float(d) for d in exact]
        mean, sd, lo, hi = mean_ci(diffs, bounds=(-1, 1))
        p_w, method = wilcoxon(diffs)
        out.append({"a": a, "b": b, "diff": mean, "lo": lo, "hi": hi, "wins": sum(d > 0 for d in diffs),
                    "n": len(diffs), "p_t": paired_t(diffs), "p_w": p_w, "w_method": method, "sd": sd,
                    "detectable": detectable(sd, len(diffs)), "rounds": paired})
    done = [c for c in out if "skip" not in c]
    for key in ("p_t", "p_w"):
        for c, adj in zip(done, holm([c[key] for c in done])):
            c[key + "_holm"] = adj
    return out
