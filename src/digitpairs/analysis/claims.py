"""The report's claims, each judged on a study's own paired evidence.

A study file states the claims it tests, in its [[claims]] array (parsed by spec/claims.py); they travel in the
study's stored spec, so the report reads them from the store.

The evidence is the paired comparison of the two variants over the rounds (analysis/compare.py): the mean difference
with its 95% interval and the paired t-test. The study file's claims are the family the verdicts are corrected over:
the `better` claims' p-values are Holm-corrected over those claims only, not over every pair of variants (the
report's table of all pairs is exploratory, corrected over itself). The verdict, at the 5% level: a `better` claim is confirmed where the difference is significant in its direction, contradicted where it
is significant the other way, and not confirmed otherwise. A `same` claim is judged against its margin: confirmed
where the 95% interval of the difference lies within +-margin (two one-sided tests, each at 2.5%), contradicted
where it lies wholly beyond it (the difference is larger than the margin), and not confirmed otherwise: a difference
that is merely not significant is no evidence that there is none (few rounds detect little), and one that is
significant but smaller than the margin is what the claim allows. A claim on a variant the study lacks or lacks
rounds of, a single round, or a `better` claim whose t-test is undefined (the same difference in every round), is
not checked.
"""

import math

from digitpairs.analysis.stats import holm
from digitpairs.spec.claims import MARGIN

LEVEL = 0.05  # significance level of the family's Holm-corrected paired t-test


def judge(claims: list[dict], rows: list[dict], comps: list[dict], unrun: set[str] = frozenset()) -> list[dict]:
    """Every claim with its evidence and verdict (check()), the `better` claims' p-values Holm-corrected over
    those of the family that could be tested (a `same` claim's p, which decides nothing, is its own)."""
    found = [_comparison(claim, rows, comps, unrun) for claim in claims]
    tested = [i for i, (claim, c) in enumerate(zip(claims, found)) if "skip" not in c and "same" not in claim]
    adjusted = dict(zip(tested, holm([found[i]["p_t"] for i in tested])))
    return [_verdict(claim, c, adjusted.get(i, c.get("p_t", math.nan))) for i, (claim, c) in
            enumerate(zip(claims, found))]


def check(claim: dict, rows: list[dict], comps: list[dict], unrun: set[str] = frozenset()) -> dict:
    """One claim judged alone (a family of one): judge([claim], ...)."""
    return judge([claim], rows, comps, unrun)[0]


def _comparison(claim: dict, rows: list[dict], comps: list[dict], unrun: set[str]) -> dict:
    """The claim's paired comparison, or {"skip": why it cannot be checked}."""
    first, second = claim.get("same") or (claim["better"], claim["worse"])
    have = {r["arch"] for r in rows}
    lacking = [n for n in (first, second) if n not in have]
    if lacking:
        return {"skip": " and ".join(f"{n} {'has no finished run yet' if n in unrun else 'not in this study'}"
                                     for n in lacking)}
    c = next(c for c in comps if {c["a"]["arch"], c["b"]["arch"]} == {first, second})
    if "skip" in c:
        return {"skip": c["skip"]}
    if math.isnan(c["p_t"]) and "same" not in claim:  # a same claim needs only the interval
        sign = 1 if c["a"]["arch"] == first else -1
        return {"skip": (f"the paired t-test is undefined: {first} is {100 * sign * c['diff']:+.2f} points from "
                         f"{second} in every round")}
    return c


def _verdict(claim: dict, c: dict, p: float) -> dict:
    """The claim with its evidence: the difference first minus second (better minus worse, or same[0] minus
    same[1]) in points and its 95% interval, the family's Holm-corrected paired t p, the rounds the first is ahead
    in, the smallest difference these rounds detect (80% power), and the verdict (or why it is not checked)."""
    if "skip" in c:
        return claim | {"verdict": "not checked", "why": c["skip"]}
    first = (claim.get("same") or [claim["better"]])[0]
    sign = 1 if c["a"]["arch"] == first else -1  # compare states a comparison as its better minus its worse
    a, b = (c["a"], c["b"])[::sign]
    ahead = sum(a["correct"][r][0] * b["correct"][r][1] > b["correct"][r][0] * a["correct"][r][1]
                for r in c["rounds"])
    lo, hi = sorted((sign * c["lo"] + 0.0, sign * c["hi"] + 0.0))  # + 0.0: no "-0.00"
    if "same" in claim:
        margin = claim.get("margin", MARGIN) / 100
        verdict = ("confirmed" if -margin <= lo and hi <= margin else
                   "contradicted" if lo > margin or hi < -margin else "not confirmed")
    else:
        verdict = "not confirmed" if not p < LEVEL else "confirmed" if sign > 0 else "contradicted"
    return claim | {"verdict": verdict, "diff": sign * c["diff"] + 0.0, "lo": lo, "hi": hi, "p": p,
                    "ahead": ahead, "n": c["n"], "detectable": c["detectable"], "why": ""}
