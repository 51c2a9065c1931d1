"""The report's paired comparisons: a table, the same in words, and the variants beyond the report against its
best (the numbers: analysis/compare.py)."""

import math

from digitpairs.analysis.stats import WILCOXON_METHODS
from digitpairs.report.render import Column, table
from digitpairs.report.wording import p_cell, p_words


def words(c: dict) -> str:
    if "skip" in c:
        return f"{c['a']['label']} vs {c['b']['label']}: {c['skip']}."
    a, b, pts = c["a"]["label"], c["b"]["label"], 100 * c["diff"]
    if math.isnan(c["p_t_holm"]):  # the same nonzero difference in every round: t is x/0
        return (f"{a} is ahead of {b} by the same {pts:.1f} points in every round: the paired t-test is undefined "
                f"(Wilcoxon p {p_words(c['p_w_holm'])}).")
    if c["p_t_holm"] < 0.05:
        return f"{a} beats {b} by {pts:.1f} points, p {p_words(c['p_t_holm'])}, in {c['wins']} of {c['n']} rounds."
    return (f"{a} and {b} do not differ significantly ({pts:.1f} points, p {p_words(c['p_t_holm'])}); "
            f"{a} is ahead in {c['wins']} of {c['n']} rounds.")


def beyond(rows: list[dict], comps: list[dict]) -> list[tuple]:
    """Blocks on the variants beyond the report (no figures of its own) against the report's best architecture (by
    the report's figures) and the best of the report's architectures as reproduced here (by mean test accuracy)."""
    ours = [r for r in rows if r["report_mean"] is not None]
    new = [r for r in rows if r["report_mean"] is None]
    if not ours or not new:
        return []
    by_report, by_mean = max(ours, key=lambda r: r["report_mean"]), max(ours, key=lambda r: r["mean"])
    best = {id(by_report): "the report's best", id(by_mean): "the best of the report's architectures as reproduced here"}
    if by_report is by_mean:
        best[id(by_mean)] = "the report's best, also the best here"
    lines = []
    for r in new:
        for c in comps:
            pair = {id(c["a"]), id(c["b"])}
            if id(r) in pair and (pair - {id(r)}) & set(best):
                other = c["b"] if c["a"] is r else c["a"]
                lines.append(f"Against {best[id(other)]}: " + words(c))
    return [("h2", "Beyond the report"),
            ("p", ("Rows marked \"beyond the report\" are architectures the report did not run; here they face the "
                  "report's best by its own figures and the best of its architectures in this study (paired over "
                  "the rounds, Holm-corrected as above).")), ("li", lines)]


def _points(c: dict, key: str) -> str:
    return "" if "skip" in c else f"{100 * c[key]:.2f}"


COMPARISON = [  # the paired comparisons' table (rows: report.compare's)
    Column("Better", lambda c: c["a"]["label"]),
    Column("Worse", lambda c: c["b"]["label"]),
    Column("Difference (points)", lambda c: _points(c, "diff")),
    Column("95% CI (unadjusted)", lambda c: "" if "skip" in c else f"{_points(c, 'lo')} - {_points(c, 'hi')}"),
    Column("paired t p (Holm)", lambda c: "" if "skip" in c else p_cell(c["p_t_holm"])),
    Column("Wilcoxon p (Holm)", lambda c: "" if "skip" in c else p_cell(c["p_w_holm"])),
    Column("Wilcoxon method", lambda c: "" if "skip" in c else WILCOXON_METHODS[c["w_method"]]),
    Column("Rounds won", lambda c: c["skip"] if "skip" in c else f"{c['wins']}/{c['n']}"),
    Column("Detectable (points, 80% power)", lambda c: _points(c, "detectable")),
]


def comparison_blocks(rows: list[dict], comps: list[dict]) -> list[tuple]:
    """The paired comparisons as a table and in words, and the variants beyond the report against its best."""
    if not comps:
        return []
    blocks = [("h2", "Paired comparisons (exploratory)"), table(COMPARISON, comps),
              ("p", ("Differences are per round (rounds share their pairs), better minus worse, in percentage "
                     "points, from the counts of correct test pairs, with the t-interval of their mean (one "
                     "comparison's 95%, not adjusted for the others); p-values (scipy.stats) are Holm-corrected "
                     f"over these {len(comps)} comparisons, an exploratory family of every pair (the study file's "
                     "claims are judged as a family of their own, below), so a p above 0.05 may stand beside an "
                     "interval that excludes 0. Detectable: the smallest difference the rounds detect with 80% "
                     "power (two-sided 5%, from the paired SD). Wilcoxon signed-rank: exact where a comparison's "
                     "differences have no ties and no zeros; otherwise scipy's default, all sign flips for up "
                     "to 13 rounds, else the normal approximation, zero differences dropped.")),
              ("li", [words(c) for c in comps])]
    has_report = any(r["report_mean"] is not None for r in rows)
    return blocks + (beyond(rows, comps) if has_report else [])
