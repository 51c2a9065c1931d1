import math

import pytest

from digitpairs import sweeps


def row(base: str, value, vals: list[float | None]) -> dict:
    known = [v for v in vals if v is not None]
    return {"base": base, "sweep": {"alpha": value}, "vals": dict(enumerate(vals)), "mean": 0.9, "sd": 0.01,
            "val_mean": sum(known) / len(known) if known else None, "val_sd": None}


def test_the_value_chosen_on_validation_and_the_others_paired_against_it():
    rows = [row("a", 0.5, [0.90, 0.92, 0.94]), row("a", 1.0, [0.91, 0.94, 0.95]), row("b", 0.5, [None] * 3)]
    spec = {"select": "val", "variants": [{"sweep": {"alpha": 0}}]}
    (group,) = sweeps.chosen(spec, rows).values()
    assert [r.get("chosen") for r in group] == [False, True, None] and "val_diff" not in group[1]
    mean, lo, hi = group[0]["val_diff"]  # differences -0.01, -0.02, -0.01
    assert mean == pytest.approx(-0.04 / 3) and lo < mean < hi
    cells = [c.cell(r) for c in sweeps.columns("alpha") for r in group[:1]]
    assert cells[4] == f"{100 * mean:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f})"
    one = [row("a", 0.5, [0.90]), row("a", 1.0, [0.95])]
    sweeps.chosen(spec, one)
    assert one[0]["val_diff"][0] == pytest.approx(-0.05) and math.isnan(one[0]["val_diff"][1])
    assert sweeps.columns("alpha")[4].cell(one[0]) == "-5.00"
    plain = [row("a", 0.5, [0.9]), row("a", 1.0, [0.95])]
    sweeps.chosen({"select": None, "variants": spec["variants"]}, plain)
    assert not any("chosen" in r or "val_diff" in r for r in plain)  # no select: nothing chosen
