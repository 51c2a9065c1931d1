"""The report's section on the study file's claims: each with its evidence and verdict (analysis/claims.py)."""

import math

from digitpairs.analysis.claims import judge
from digitpairs.report.render import Column, table
from digitpairs.report.wording import p_words
from digitpairs.spec.claims import MARGIN


def _evidence(c: dict) -> str:
    if "diff" not in c:
        return c["why"]
    p = p_words(c["p"])
    m = c.get("margin", MARGIN)
    margin = f"; margin +-{m:g} point{'s' * (m != 1)}" if "same" in c else ""
    power = "" if math.isnan(c["detectable"]) else \
        f"; {c['n']} rounds detect {100 * c['detectable']:.2f} points or more (80% power)"
    return (f"{100 * c['diff']:+.2f} points (95% CI {100 * c['lo']:+.2f} to {100 * c['hi']:+.2f}), p {p}, "
            f"ahead in {c['ahead']} of {c['n']} rounds{margin}{power}")


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
    checked = judge(claims, rows, comps, unrun)
    return [("h2", "Claims, checked"), table(COLUMNS, checked),
            ("p", ("Each claim of the study file, checked on this study's rounds: the difference is the first "
                   "variant minus the second, per round from the counts of correct test pairs, with its 95% "
                   "interval; p is the paired t-test's, Holm-corrected over the study file's claims that compare "
                   "(the family the verdicts are drawn from; a claim of no difference shows its own p, which "
                   "decides nothing). Beside it, the smallest difference these rounds detect with 80% power "
                   "(two-sided 5%, from the paired SD): a claim not confirmed with a difference below it is one "
                   "these rounds are too few to settle. At the 5% level, "
                   "a claim that one variant beats another is confirmed if the difference is significant in its "
                   "direction, contradicted if significant the other way, and not confirmed otherwise. A claim "
                   "of no difference is confirmed if the difference's 95% interval lies within the claim's margin "
                   "(equivalence; a difference that is merely not significant is no evidence that there is none), "
                   "contradicted if it lies wholly beyond the margin, else not confirmed."))]
