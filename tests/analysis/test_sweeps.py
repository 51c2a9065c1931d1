import math

import pytest

from digitpairs.analysis import sweeps
from digitpairs.report import sweeps as report_sweeps


def row(name: str, sweep: dict, vals: list[float | None]) -> dict:
    """A report row (report.summarise's) of the variant NAME[k=v,...] of a sweep."""
    known = [v for v in vals if v is not None]
    return {"arch": f"{name}[{','.join(f'{k}={v}' for k, v in sweep.items())}]", "base": "siamese_ws_aux",
            "sweep": sweep, "vals": dict(enumerate(vals)), "mean": 0.9, "sd": 0.01,
            "val_mean": sum(known) / len(known) if known else None, "val_sd": None}


def spec(select="val", keys=("alpha",)):
    return {"select": select, "variants": [{"sweep": dict.fromkeys(keys, 0)}]}


def test_the_value_chosen_on_validation_and_the_others_paired_against_it():
    rows = [row("a", {"alpha": 0.5}, [0.90, 0.92, 0.94]), row("a", {"alpha": 1.0}, [0.91, 0.94, 0.95]),
            row("b", {"alpha": 0.5}, [None] * 3)]
    (group,) = sweeps.chosen(spec(), rows).values()
    assert [r.get("chosen") for r in group] == [False, True, None] and "val_diff" not in group[1]
    mean, lo, hi = group[0]["val_diff"]  # differences -0.01, -0.02, -0.01
    assert mean == pytest.approx(-0.04 / 3) and lo < mean < hi
    cells = [c.cell(group[0]) for c in report_sweeps.columns("alpha")]
    assert cells[:2] == ["0.5", "a"] and cells[4] == f"{100 * mean:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f})"
    (one,) = sweeps.chosen(spec(), [row("a", {"alpha": 0.5}, [0.90]), row("a", {"alpha": 1.0}, [0.95])]).values()
    assert one[0]["val_diff"][0] == pytest.approx(-0.05) and math.isnan(one[0]["val_diff"][1])
    assert report_sweeps.columns("alpha")[4].cell(one[0]) == "-5.00"
    (plain,) = sweeps.chosen(spec(select=None), [row("a", {"alpha": 0.5}, [0.9]),
                                                 row("a", {"alpha": 1.0}, [0.95])]).values()
    assert not any("chosen" in r or "val_diff" in r for r in plain)  # no select: nothing chosen


def test_each_variant_chooses_its_own_value():
    """Two variants of one base architecture (with and without BatchNorm) are swept and chosen apart."""
    rows = [row("ws", {"alpha": 0.5}, [0.90, 0.91]), row("ws", {"alpha": 1.0}, [0.80, 0.81]),
            row("ws_bn", {"alpha": 0.5}, [0.70, 0.71]), row("ws_bn", {"alpha": 1.0}, [0.95, 0.96])]
    (group,) = sweeps.chosen(spec(), rows).values()
    assert [r["chosen"] for r in group] == [True, False, False, True]
    assert [r["family"] for r in group] == ["ws", "ws", "ws_bn", "ws_bn"]
    assert group[1]["val_diff"][0] == pytest.approx(-0.10) and group[2]["val_diff"][0] == pytest.approx(-0.25)
    assert sweeps.label({"arch": "siamese_ws_aux[lr=0.002,alpha=0.5]"}, "alpha") == "siamese_ws_aux[lr=0.002]"
    assert sweeps.label({"arch": "siamese_ws[channels=(8, 16),alpha=0.5]"}, "channels") == "siamese_ws[alpha=0.5]"


def test_a_flag_sweep_chooses_one_value():
    rows = [row("siamese_ws", {"bn": True}, [0.9, 0.92]), row("siamese_ws", {"bn": False}, [0.8, 0.82])]
    (group,) = sweeps.chosen(spec(keys=("bn",)), rows).values()
    assert [r["chosen"] for r in group] == [True, False] and {r["family"] for r in group} == {"siamese_ws"}


def test_two_swept_keys_choose_apart():
    """alpha x lr: alpha's section chooses alpha for each lr, lr's section lr for each alpha."""
    vals = {(0.5, 1): [0.90, 0.90], (0.5, 2): [0.80, 0.80], (1.0, 1): [0.70, 0.70], (1.0, 2): [0.95, 0.95]}
    rows = [row("a", {"alpha": a, "lr": lr}, v) for (a, lr), v in vals.items()]
    sections = sweeps.chosen(spec(keys=("alpha", "lr")), rows)
    by_alpha = {r["arch"]: r["chosen"] for r in sections["alpha"]}
    by_lr = {r["arch"]: r["chosen"] for r in sections["lr"]}
    assert by_alpha == {"a[alpha=0.5,lr=1]": True, "a[alpha=0.5,lr=2]": False,
                        "a[alpha=1.0,lr=1]": False, "a[alpha=1.0,lr=2]": True}
    assert by_lr == {"a[alpha=0.5,lr=1]": True, "a[alpha=0.5,lr=2]": False,
                     "a[alpha=1.0,lr=1]": False, "a[alpha=1.0,lr=2]": True}
    assert [r["family"] for r in sections["alpha"]] == ["a[lr=1]", "a[lr=2]", "a[lr=1]", "a[lr=2]"]
    assert not any("chosen" in r for r in rows)  # the report's rows are left as they were
