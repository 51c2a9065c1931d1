"""The report's claims, each judged on a study's own paired evidence.

A study file states the claims it tests, in its [[claims]] array (parsed by spec/claims.py); they travel in the
study's stored spec, so the report reads them from the store.

The evidence is the paired comparison of the two variants over the rounds (analysis/compare.py): the mean difference
with its 95% interval and the paired t-test, Holm-corrected over all the report's comparisons. The verdict, at the
5% level: a `better` claim is confirmed where the difference is significant in its direction, contradicted where it
is significant the other way, and not confirmed otherwise. A `same` claim is judged against its margin: confirmed
where the 95% interval of the difference lies within +-margin (two one-sided tests, each at 2.5%), contradicted
where it lies wholly beyond it (the difference is larger than the margin), and not confirmed otherwise: a difference
that is merely not significant is no evidence that there is none (few rounds detect little), and one that is
significant but smaller than the margin is what the claim allows. A claim on a variant the study lacks or lacks
rounds of, a single round, or a `better` claim whose t-test is undefined (the same difference in every round), is
not checked.
"""

import math

from digitpairs.spec.claims import MARGIN

LEVEL = 0.05  # significance level of the Holm-corrected paired t-test


def check(claim: dict, rows: list[dict], comps: list[dict], unrun: set[str] = frozenset()) -> dict:
    """The claim with its evidence: the difference first minus second (better minus worse, or same[0] minus
    same[1]) in points and its 95% interval, the Holm-corrected paired t p, the rounds the first is ahead in, and
    the verdict (or why it is not checked)."""
    first, second = claim.get("same") or (claim["better"], claim["worse"])
    have = {r["arch"] for r in rows}
    lacking = [n for n in (first, second) if n not in have]
    if lacking:
        why = " and ".join(f"{n} {'has no finished run yet' if n in unrun else 'not in this study'}" for n in lacking)
        return claim | {"verdict": "not checked", "why": why}
    c = next(c for c in comps if {c["a"]["arch"], c["b"]["arch"]} == {first, second})
    if "skip" in c:
        return claim | {"verdict": "not checked", "why": c["skip"]}
    sign = 1 if c["a"]["arch"] == first else -1  # compare states a comparison as its better minus its worse
    a, b = (c["a"], c["b"])[::sign]
    ahead = sum(a["correct"][r][0] * b["correct"][r][1] > b["correct"][r][0] * a["correct"][r][1]
                for r in a["correct"])
    if math.isnan(c["p_t_holm"]) and "same" not in claim:  # a same claim needs only the interval
        return claim | {"verdict": "not checked", "why": (f"the paired t-test is undefined: {first} is "
                                                          f"{100 * sign * c['diff']:+.2f} points from {second} "
                                                          f"in every round")}
    significant = c["p_t_holm"] < LEVEL
    lo, hi = sorted((sign * c["lo"] + 0.0, sign * c["hi"] + 0.0))  # + 0.0: no "-0.00"
    if "same" in claim:
        margin = claim.get("margin", MARGIN) / 100
        verdict = ("confirmed" if -margin <= lo and hi <= margin else
                   "contradicted" if lo > margin or hi < -margin else "not confirmed")
    else:
        verdict = "not confirmed" if not significant else "confirmed" if sign > 0 else "contradicted"
    return claim | {"verdict": verdict, "diff": sign * c["diff"] + 0.0, "lo": lo, "hi": hi, "p": c["p_t_holm"],
                    "ahead": ahead, "n": c["n"], "why": ""}
