"""The report's explanations from every run's answers on its test pairs (the store's `answers` table): the digit
accuracy of the branches, where on the (first digit, second digit) grid the errors sit, and what the study's model's
wrong pairs look like.
"""

import math
from pathlib import Path

import numpy as np

from digitpairs.analysis import answers
from digitpairs.analysis.choice import choose_variant
from digitpairs.analysis.stats import mean_ci
from digitpairs.report.figures import plot_gallery, plot_grids
from digitpairs.report.render import Column, table
from digitpairs.report.wording import number

GALLERY = 24  # wrong pairs the gallery shows
REFERENCE = "siamese_ws"  # the heatmap beside the best variant's: the plain weight-shared Siamese net


DIGITS = [  # the digit accuracy table (rows: digit_rows')
    Column("Architecture", lambda r: f"{r['label']} (`{r['arch']}`)"),
    Column("Objective", lambda r: r["objective"]),
    Column("Digit accuracy", lambda r: number(r["digit_mean"])),
    Column("SD", lambda r: number(r["digit_sd"])),
    Column("95% CI", lambda r: "" if math.isnan(r["digit_lo"]) else f"{number(r['digit_lo'])} - {number(r['digit_hi'])}"),
    Column("Hardest digit", lambda r: f"{r['hardest']} ({number(r['hardest_acc'])})"),
    Column("Comparison accuracy", lambda r: number(r["mean"])),
]


def digit_rows(rows: list[dict], found: dict) -> list[dict]:
    """Rows of the variants that learn digits (objective other than comparison) and have answers: the digit
    accuracy of the branch on the test images, over rounds, and the digit it reads least often right (over all
    its rounds' images of that digit)."""
    out = []
    for r in rows:
        runs = list(found.get(r["arch"], {}).values())
        if r["objective"] == "comparison" or not runs:
            continue
        mean, sd, lo, hi = mean_ci([answers.digit_accuracy(run) for run in runs], bounds=(0, 1))
        right, total = answers.digits_read(runs)
        by_digit = np.where(total > 0, right / np.maximum(total, 1), np.inf)  # a digit with no image: not hardest
        hardest = int(by_digit.argmin())
        out.append(r | {"digit_mean": mean, "digit_sd": sd, "digit_lo": lo, "digit_hi": hi, "hardest": hardest,
                        "hardest_acc": float(by_digit[hardest])})
    return out


def blocks(rows: list[dict], found: dict, out: Path, model: str | None = None) -> list[tuple]:
    """The sections read from the runs' answers; in a store written before answers were kept, one line saying so."""
    if not found:
        return [("h2", "What the networks get wrong"),
                ("p", ("This store holds no per-pair answers (it was written before they were kept): run the study "
                       "again into a new store for the digit accuracy, the error heatmaps and the gallery."))]
    blocks = [("h2", "What the networks get wrong")]
    digits = digit_rows(rows, found)
    if digits:
        blocks += [("h3", "Digit accuracy of the branch"), table(DIGITS, digits),
                   ("p", ("For every variant that learns digits: the share of its rounds' test images (two per "
                          "test pair) whose digit the branch reads right, as it answered after the last epoch "
                          "(members and test-time views averaged), mean over rounds; the hardest digit is the one "
                          "it reads least often right."))]
    top, by = shown_variant(rows, model)
    shown = [r for r in [top] + [r for r in rows if r["arch"] == REFERENCE and r is not top] if r["arch"] in found]
    if shown:
        grids = [(f"{r['label']}: {r['mean']:.4f}", *answers.grid(list(found[r["arch"]].values()))) for r in shown]
        plot_grids(grids, out / "heatmap.png")
        blocks += [("h3", "Comparison accuracy by (first digit, second digit)"),
                   ("img", "heatmap.png", "comparison accuracy by digit pair"),
                   ("p", (f"Test pairs of every round of {' and of '.join(r['label'] for r in shown)}, by the true "
                          "digits of the first (rows) and second (columns) image: the share answered right, in "
                          "percent. On the diagonal the digits are equal (target 1: first <= second)."))]
    return blocks + gallery_blocks(top, by, found.get(top["arch"], {}), out)


def gallery_blocks(row: dict, by: str, runs: dict[int, dict], out: Path) -> list[tuple]:
    """Wrong test pairs of one variant, taken round by round in turn (the first wrong pair of every round, then the
    second, ...), with the pixels its runs stored."""
    queues = [[(rnd, k) for k in range(len(run["wrong_at"]))] for rnd, run in sorted(runs.items())]
    picked = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)][:GALLERY]
    if not picked:
        return []
    pairs = []
    for rnd, k in picked:
        run = runs[rnd]
        at = int(run["wrong_at"][k])
        pairs.append({"x": run["wrong"][k].astype(float), "true": tuple(run["classes"][at]),
                      "read": tuple(run["read"][at]), "p_le": float(run["p_le"][at]), "round": rnd})
    plot_gallery(pairs, f"{row['label']}: wrong test pairs", out / "gallery.png")
    return [("h3", f"Wrong test pairs of {row['label']}"), ("img", "gallery.png", "wrong test pairs"),
            ("p", (f"{len(pairs)} of the wrong answers of {row['label']} ({by}), the "
                   "first ones of each round in turn: the two images as the network saw them (stored with the run, before "
                   "normalisation), their true digits, the digits the branch read and P(first <= second), the "
                   "mlp head's probability or the one from the two digit distributions."))]


def shown_variant(rows: list[dict], model: str | None) -> tuple[dict, str]:
    """The variant the section looks at first, and why: the one `digitpairs predict` would choose
    (analysis/choice.py); where none can be chosen, the study's first variant, named as such."""
    name, why = choose_variant({r["arch"]: list(r["vals"].values()) for r in rows}, model)
    if name is None:
        return rows[0], f"the study's first variant: it has {why}"
    return next(r for r in rows if r["arch"] == name), why
