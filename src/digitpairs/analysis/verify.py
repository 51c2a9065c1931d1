"""Did the study reproduce the report? A verdict for every variant with a figure of the report, every claim of the
study file, and the rounds that failed: the scorecard that `digitpairs verify` prints (and exits by) and that the
report opens with.

A variant reproduces the report's figure where the report's mean lies in this study's 95% interval of the mean;
otherwise it is above or below it, by so many points and so many of the report's SDs. The study holds when no claim
is contradicted and no variant is below the report's figure.
"""

import math

from digitpairs.analysis.claims import judge
from digitpairs.analysis.compare import compare, summarise
from digitpairs.analysis.diagnose import flagged, sensitivity
from digitpairs.spec.diagnosis import DEFAULT, Diagnosis


def scorecard(spec: dict, runs: list[dict], curves: list[dict], found: dict,
              setting: Diagnosis = DEFAULT) -> dict:
    """The study's scorecard from its stored spec, runs, curves and answers (store.answers)."""
    rows = summarise(spec, runs)
    unrun = {v["name"] for v in spec["variants"]} - {r["arch"] for r in rows}
    comps = compare(rows, spec["rounds"])
    claims = judge(spec.get("claims") or [], rows, comps, unrun)
    failed = flagged(runs, curves, found, setting)
    variants = [row_verdict(r) for r in rows if r["report_mean"] is not None]
    sens = sensitivity(spec, runs, failed, spec.get("claims") or [])
    for r in sens["rows"]:  # what the report's figure would say without the flagged rounds
        r["verdict"] = row_verdict(r)["verdict"] if r["report_mean"] is not None else None
    ok = (not any(c["verdict"] == "contradicted" for c in claims)
          and not any(v["verdict"] == "below" for v in variants))
    return {"rows": rows, "comparisons": comps, "variants": variants, "claims": claims,
            "failed": [{"variant": a, "round": r, "why": why} for (a, r), why in sorted(failed.items())],
            "sensitivity": sens, "rule": setting.rule(),
            "holds": ok}


def row_verdict(row: dict) -> dict:
    """A variant against the report's figure: reproduced, above or below, and the evidence in a sentence."""
    mean, report, sd = row["mean"], row["report_mean"], row["report_sd"]
    lo, hi = row["ci_low"], row["ci_high"]
    inside = lo <= report <= hi if not math.isnan(lo) else mean == report
    verdict = "reproduced" if inside else "above" if mean > report else "below"
    points, sds = 100 * (mean - report), (mean - report) / sd if sd else math.nan
    beyond = sum((acc > report) if verdict == "above" else (acc < report) for acc in row["accs"].values())
    n = len(row["accs"])
    if verdict == "reproduced":
        reason = (f"the report's {report:.4f} lies in this study's 95% interval ({lo:.4f} - {hi:.4f}) of the mean "
                  f"{mean:.4f} over {n} rounds")
    else:
        reason = (f"{mean:.4f} against the report's {report:.4f}: {points:+.2f} points ({sds:+.1f} of the report's "
                  f"SDs), {beyond} of {n} rounds {verdict} the report's figure")
        if beyond == n and n > 1 and verdict == "above":  # this study's worst round beats the report's mean
            reason += "; every round is above it, so the report's own figure is the outlier here"
        elif beyond == n and n > 1:
            reason += "; every round is below it"
    return {"variant": row["arch"], "label": row["label"], "mean": mean, "ci": [lo, hi], "report": report,
            "report_sd": sd, "verdict": verdict, "points": points, "report_sds": sds, "reason": reason}
