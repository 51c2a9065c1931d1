import math

import pytest

from digitpairs import sweeps


def row(name: str, value, vals: list[float | None], bn: bool = False) -> tuple[dict, dict]:
    """A report row (report.summarise's) and its variant in the study's spec: alpha swept."""
    known = [v for v in vals if v is not None]
    name = f"{name}[alpha={value}]"
    r = {"arch": name, "base": "siamese_ws_aux", "sweep": {"alpha": value}, "vals": dict(enumerate(vals)),
         "mean": 0.9, "sd": 0.01, "val_mean": sum(known) / len(known) if known else None, "val_sd": None}
    v = {"name": name, "sweep": {"alpha": value}, "arch": {"bn": bn, "label": f"WS (alpha={value})", "name": name},
         "config": {"alpha": value, "n_val": 200}}
    return r, v


def study(*made, select="val"):
    rows, variants = zip(*made)
    return {"select": select, "variants": list(variants)}, list(rows)


def test_the_value_chosen_on_validation_and_the_others_paired_against_it():
    spec, rows = study(row("a", 0.5, [0.90, 0.92, 0.94]), row("a", 1.0, [0.91, 0.94, 0.95]),
                       row("b", 0.5, [None] * 3, bn=True))
    (group,) = sweeps.chosen(spec, rows).values()
    assert [r.get("chosen") for r in group] == [False, True, None] and "val_diff" not in group[1]
    mean, lo, hi = group[0]["val_diff"]  # differences -0.01, -0.02, -0.01
    assert mean == pytest.approx(-0.04 / 3) and lo < mean < hi
    cells = [c.cell(group[0]) for c in sweeps.columns("alpha")]
    assert cells[:2] == ["0.5", "a"] and cells[4] == f"{100 * mean:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f})"
    spec, one = study(row("a", 0.5, [0.90]), row("a", 1.0, [0.95]))
    sweeps.chosen(spec, one)
    assert one[0]["val_diff"][0] == pytest.approx(-0.05) and math.isnan(one[0]["val_diff"][1])
    assert sweeps.columns("alpha")[4].cell(one[0]) == "-5.00"
    spec, plain = study(row("a", 0.5, [0.9]), row("a", 1.0, [0.95]), select=None)
    sweeps.chosen(spec, plain)
    assert not any("chosen" in r or "val_diff" in r for r in plain)  # no select: nothing chosen


def test_each_variant_chooses_its_own_value():
    """Two variants of one base architecture (with and without BatchNorm) are swept and chosen apart."""
    spec, rows = study(row("ws", 0.5, [0.90, 0.91]), row("ws", 1.0, [0.80, 0.81]),
                       row("ws_bn", 0.5, [0.70, 0.71], bn=True), row("ws_bn", 1.0, [0.95, 0.96], bn=True))
    sweeps.chosen(spec, rows)
    assert [r["chosen"] for r in rows] == [True, False, False, True]
    assert [r["family"] for r in rows] == ["ws", "ws", "ws_bn", "ws_bn"]
    assert rows[1]["val_diff"][0] == pytest.approx(-0.10) and rows[2]["val_diff"][0] == pytest.approx(-0.25)
    assert sweeps.label({"arch": "siamese_ws_aux[lr=0.002,alpha=0.5]"}, "alpha") == "siamese_ws_aux[lr=0.002]"
