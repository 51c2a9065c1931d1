"""Sweeps: per swept key, the variants that differ only in its value, the value chosen on validation accuracy (a
study with select = "val"), and each other value's paired difference from the chosen one on the validation pairs,
so that a choice can be read with its uncertainty. The test set never chooses. No torch, no matplotlib.
"""

import re

from digitpairs.analysis.stats import mean_ci


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
