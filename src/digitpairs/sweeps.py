"""The report's sweep sections: per swept key, a figure and a table of every value's validation and test accuracy,
the value chosen on validation accuracy (a study with select = "val"), and each other value's paired difference from
the chosen one on the validation pairs, so that a choice can be read with its uncertainty. The test set never
chooses.
"""

import math
import re
from pathlib import Path

from digitpairs.figures import plot_sweep
from digitpairs.render import Column, number, table
from digitpairs.stats import mean_ci


def label(row: dict, key: str) -> str:
    """A variant's name without the swept key's value: siamese_ws_aux[lr=0.002,alpha=0.5] -> siamese_ws_aux[lr=0.002]."""
    value = r"(?:\([^)]*\)|[^,\]])*"  # a value, or a tuple as older stores wrote it: (8, 16)
    name = re.sub(rf"(?<=[\[,]){re.escape(key)}={value},?", "", row["arch"])
    return name.replace(",]", "]").removesuffix("[]")


def chosen(spec: dict, rows: list[dict]) -> dict[str, list[dict]]:
    """{sweep key: copies of the rows of the variants that sweep it}, each with its `family`: label(), the variants
    that differ only in that key's value (two variants of one architecture, with and without BatchNorm, are two).
    When the study selects on val, in each family one row gains `chosen` and the others `val_diff`: (mean, low,
    high) of its validation accuracy minus the chosen one's, per round, with the 95% t-interval (rows:
    report.summarise's)."""
    keys = {k for v in spec["variants"] for k in v["sweep"]}
    out = {}
    for key in sorted(keys):
        group = [dict(r, family=label(r, key)) for r in rows if key in r["sweep"]]  # copies: one per key swept
        for name in dict.fromkeys(r["family"] for r in group):
            mine = [r for r in group if r["family"] == name]
            with_val = [r for r in mine if r["val_mean"] is not None]
            if spec.get("select") == "val" and with_val:
                best = max(with_val, key=lambda r: r["val_mean"])  # validation only: the test set never chooses
                for r in mine:
                    r["chosen"] = r is best
                    rounds = [i for i in sorted(set(r["vals"]) & set(best["vals"]))
                              if r["vals"][i] is not None and best["vals"][i] is not None]
                    if r is not best and rounds:
                        mean, _, lo, hi = mean_ci([r["vals"][i] - best["vals"][i] for i in rounds], bounds=(-1, 1))
                        r["val_diff"] = mean, lo, hi
        out[key] = group
    return out


def _diff(r: dict) -> str:
    if "val_diff" not in r:
        return ""
    mean, lo, hi = (100 * x for x in r["val_diff"])
    return f"{mean:+.2f}" + ("" if math.isnan(lo) else f" ({lo:+.2f} to {hi:+.2f})")  # nan: a single round


def columns(key: str) -> list[Column]:
    """The table of a swept key (rows: chosen()'s)."""
    return [Column(key, lambda r: str(r["sweep"][key])), Column("Variant", lambda r: r["family"]),
            Column("Val. accuracy", lambda r: number(r["val_mean"])), Column("SD", lambda r: number(r["val_sd"])),
            Column("Val. vs chosen (points, 95% CI)", _diff),
            Column("Test accuracy", lambda r: number(r["mean"])), Column("SD", lambda r: number(r["sd"])),
            Column("Chosen", lambda r: "yes" if r.get("chosen") else "")]


def blocks(spec: dict, rows: list[dict], out: Path) -> list[tuple]:
    """Per swept key: its figure, its table, and the value chosen on validation accuracy."""
    blocks = []
    for key, group in chosen(spec, rows).items():
        plot_sweep(key, group, out / f"sweep_{key}.png")
        picked = [r for r in group if r.get("chosen")]
        blocks += [("h2", f"Sweep of {key}"), ("img", f"sweep_{key}.png", f"sweep of {key}"),
                   table(columns(key), group)]
        if picked:
            blocks += [("p", " ".join(f"Chosen on validation accuracy for {r['family']}: {key} = {r['sweep'][key]} "
                                      f"(validation {number(r['val_mean'])}); test accuracy there {number(r['mean'])} +- "
                                      f"{number(r['sd'])}." for r in picked) +
                        " Val. vs chosen: a value's validation accuracy minus the chosen one's, per round (the same "
                        "pairs), mean and 95% t-interval in points.")]
        elif spec.get("select") == "val":
            blocks += [("p", "No validation split (n_val = 0): nothing is chosen.")]
    return blocks
