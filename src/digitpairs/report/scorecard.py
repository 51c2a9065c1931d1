"""The report's opening: did the study reproduce the report (analysis/verify.py)? A verdict for every variant with
a figure of the report and every claim, the rounds that failed with their curves and what the study says without
them; and the same as data, report.json."""

import json
import math
from pathlib import Path

from digitpairs.report.figures import plot_failed
from digitpairs.report.render import Column, table
from digitpairs.report.wording import number

VARIANTS = [
    Column("Architecture", lambda v: f"{v['label']} (`{v['variant']}`)"),
    Column("This study (95% CI)", lambda v: f"{number(v['mean'])} ({number(v['ci'][0])} - {number(v['ci'][1])})"),
    Column("Report", lambda v: number(v["report"])),
    Column("Verdict", lambda v: v["verdict"] if v["verdict"] == "reproduced" else
           f"{v['verdict']}, {v['points']:+.2f} points"),
]


def blocks(card: dict, curves: list[dict], colour: dict[str, str], out: Path) -> list[tuple]:
    """The scorecard section: the variants against the report's figures, the claims' verdicts, the failed rounds."""
    claims = card["claims"]
    contradicted = [c for c in claims if c["verdict"] == "contradicted"]
    below = [v for v in card["variants"] if v["verdict"] == "below"]
    verdict = ("The study holds: no claim is contradicted and no variant is below the report's figure."
               if card["holds"] else
               f"The study does not hold: {len(contradicted)} claim(s) contradicted, {len(below)} variant(s) below "
               "the report's figure.")
    out_blocks = [("h2", "Did it reproduce?"), ("p", verdict)]
    if card["variants"]:
        out_blocks += [table(VARIANTS, card["variants"]),
                       ("li", [f"{v['label']}: {v['verdict']}: {v['reason']}." for v in card["variants"]]),
                       ("p", ("A variant reproduces the report's figure where the report's mean lies in this "
                              "study's 95% interval of the mean; otherwise it is above or below it."))]
    if claims:
        out_blocks.append(("li", [f"Claim \"{c['text']}\": {c['verdict']}" + (f" ({c['why']})" if c["why"] else "")
                                  for c in claims]))
    return out_blocks + failed_blocks(card, curves, colour, out)


def failed_blocks(card: dict, curves: list[dict], colour: dict[str, str], out: Path) -> list[tuple]:
    """The rounds flagged as failed, their curves, and the sensitivity lines."""
    if not card["failed"]:
        return [("p", f"No round failed ({card['rule']}).")]
    plot_failed(curves, card["failed"], out / "failed.png", colour)
    lines = [f"{f['variant']} round {f['round']}: {f['why']}" for f in card["failed"]]
    sens = card["sensitivity"]
    lines += [f"Without its flagged rounds, {r['label']}: {number(r['mean'])} +- {number(r['sd'])} over "
              f"{r['rounds']} rounds (95% CI {number(r['ci_low'])} - {number(r['ci_high'])})"
              + (f"; against the report's figure: {r['verdict']}" if r.get("verdict") else "") for r in sens["rows"]]
    lines += [f"Without the flagged rounds, the claim \"{c['text']}\" would be {c['after']} (it is {c['before']})"
              for c in sens["changed"]] or ["Without the flagged rounds, no claim's verdict changes."]
    return [("h3", "Failed rounds"), ("li", lines), ("img", "failed.png", "the failed rounds' curves"),
            ("p", (f"The rule: {card['rule']}. Flagged rounds stay in every table and statistic above; the lines "
                   "here say what the study would show without them (their claims paired over the rounds that "
                   "neither variant has flagged). The figure: each flagged round's curves (dashed) beside the mean "
                   "of its variant's other rounds."))]


def to_json(study: str, card: dict, provenance: list[dict]) -> str:
    """report.json: the scorecard, the comparisons, the claims, the failed rounds and the provenance, as data."""
    rows = [{k: r[k] for k in ("arch", "label", "mean", "sd", "ci_low", "ci_high", "n_params", "rounds", "missing",
                                "val_mean", "report_mean", "report_sd", "report_params")}
            | {"accs": {str(k): v for k, v in r["accs"].items()}} for r in card["rows"]]
    comps = [{"better": c["a"]["arch"], "worse": c["b"]["arch"]} | ({"skip": c["skip"]} if "skip" in c else {
        k: c[k] for k in ("diff", "lo", "hi", "wins", "n", "p_t", "p_t_holm", "p_w", "p_w_holm", "w_method", "sd",
                          "detectable")}) for c in card["comparisons"]]
    data = {"study": study, "holds": card["holds"], "variants": card["variants"], "claims": card["claims"],
            "failed_rounds": card["failed"], "failed_rule": card["rule"],
            "without_failed_rounds": {"rows": [{k: r.get(k) for k in ("arch", "mean", "sd", "ci_low", "ci_high",
                                                                        "rounds", "verdict")}
                                               for r in card["sensitivity"]["rows"]],
                                      "claims_changed": card["sensitivity"]["changed"]},
            "table": rows, "comparisons": comps, "provenance": provenance}
    return json.dumps(finite(data), indent=1, sort_keys=True) + "\n"


def finite(value):
    """The value with every NaN as null (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
