"""The report's sweep sections: per swept key, a figure and a table of every value's validation and test accuracy,
and the value chosen on validation accuracy (analysis/sweeps.py)."""

import math
from pathlib import Path

from digitpairs.analysis.sweeps import chosen
from digitpairs.report.figures import plot_sweep
from digitpairs.report.render import Column, table
from digitpairs.report.wording import number


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
