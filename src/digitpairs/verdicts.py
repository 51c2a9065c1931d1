"""The report's claims as data, each checked on a study's own paired evidence.

A study file states the claims it tests, in its [[claims]] array; they travel in the study's stored spec, so the
report reads them from the store:

    [[claims]]
    better = "transfer"                                      # this variant is more accurate than `worse`
    worse = "siamese_ws"
    text = "TransferLearn beats Siamese WS."
    [[claims]]
    same = ["siamese_ws_aux_bn", "siamese_ws_aux_bn_drop"]   # the two are equally accurate, within the margin
    margin = 1                                               # in points of accuracy (default 1)
    text = "Dropout on top of BatchNorm changes nothing significant."

The evidence is the paired comparison of the two variants over the rounds (report.compare): the mean difference
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

from digitpairs import UserError
from digitpairs.render import Column, table

LEVEL = 0.05  # significance level of the Holm-corrected paired t-test
MARGIN = 1.0  # a `same` claim's default margin of equivalence, in points of accuracy
KEYS = {"text", "better", "worse", "same", "margin"}


def parse(claims, where: str, known: set[str]) -> list[dict]:
    """The [[claims]] of a study file, checked: each {text, better, worse} or {text, same: [a, b]}, naming variants
    in `known` (the study's, and the registered architectures: a study run with fewer variants keeps the claims
    on the others, unchecked)."""
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise UserError(f"{where}: claims must be an array of tables ([[claims]]), not {claims!r}")
    out = []
    for i, claim in enumerate(claims):
        here = f"{where} claims[{i}]"
        unknown = sorted(set(claim) - KEYS)
        if unknown:
            raise UserError(f"{here}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
        text = claim.get("text")
        if not isinstance(text, str) or not text.isprintable() or not 0 < len(text) <= 300:
            raise UserError(f"{here}: text must be one printable line of 1-300 characters, not {text!r}")
        if "same" in claim and not {"better", "worse"} & set(claim):
            names, kind = claim["same"], "same"
            if not isinstance(names, list) or len(names) != 2:
                raise UserError(f"{here}: same must be a list of two variant names, not {names!r}")
        elif {"better", "worse"} <= set(claim) and "same" not in claim:
            names, kind = [claim["better"], claim["worse"]], "better"
        else:
            raise UserError(f"{here}: a claim has better and worse, or same (a list of two), beside its text")
        for name in names:
            if not isinstance(name, str) or name not in known:
                raise UserError(f"{here}: {name!r} is no variant of this study nor a registered architecture")
        if names[0] == names[1]:
            raise UserError(f"{here}: a claim compares two different variants, not {names[0]!r} with itself")
        margin = claim.get("margin")  # stored only where given: the specs of studies without one stay as they were
        if margin is not None and (kind != "same" or isinstance(margin, bool) or not isinstance(margin, (int, float))
                                   or not 0 < margin <= 100):
            raise UserError(f"{here}: margin belongs to a same claim and is a number of points in (0, 100], "
                            f"not {margin!r}")
        out.append(({"text": text, kind: names} | ({} if margin is None else {"margin": margin})) if kind == "same"
                   else {"text": text, "better": names[0], "worse": names[1]})
    return out


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


def _evidence(c: dict) -> str:
    if "diff" not in c:
        return c["why"]
    p = ("undefined (the same difference in every round)" if math.isnan(c["p"]) else
         "< 0.001" if c["p"] < 0.001 else f"= {c['p']:.3f}")
    m = c.get("margin", MARGIN)
    margin = f"; margin +-{m:g} point{'s' * (m != 1)}" if "same" in c else ""
    return (f"{100 * c['diff']:+.2f} points (95% CI {100 * c['lo']:+.2f} to {100 * c['hi']:+.2f}), p {p}, "
            f"ahead in {c['ahead']} of {c['n']} rounds{margin}")


COLUMNS = [
    Column("Claim", lambda c: c["text"]),
    Column("Compared", lambda c: (" vs ".join(c["same"]) + " (same)") if "same" in c else
           f"{c['better']} better than {c['worse']}"),
    Column("Evidence in this study", _evidence),
    Column("Verdict", lambda c: c["verdict"]),
]


def blocks(claims: list[dict] | None, rows: list[dict], comps: list[dict], unrun: set[str] = frozenset()
           ) -> list[tuple]:
    """The claims section of the report: a table of the claims with their evidence and verdicts (none: no
    section, as in a study stored before claims were); unrun: the study's variants without a finished run."""
    if not claims:
        return []
    checked = [check(c, rows, comps, unrun) for c in claims]
    return [("h2", "Claims, checked"), table(COLUMNS, checked),
            ("p", ("Each claim of the study file, checked on this study's rounds: the difference is the first "
                   "variant minus the second, per round from the counts of correct test pairs, with its 95% "
                   "interval; p is the paired t-test's, Holm-corrected over all comparisons above. At the 5% level, "
                   "a claim that one variant beats another is confirmed if the difference is significant in its "
                   "direction, contradicted if significant the other way, and not confirmed otherwise. A claim "
                   "of no difference is confirmed if the difference's 95% interval lies within the claim's margin "
                   "(equivalence; a difference that is merely not significant is no evidence that there is none), "
                   "contradicted if it lies wholly beyond the margin, else not confirmed."))]
