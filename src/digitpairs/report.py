"""A study's report, read from the store only: tables, statistics, figures; as Markdown and self-contained HTML.

The report is a list of blocks (heading, text, table, image, code) that render.py renders twice, so report.md and
report.html always say the same thing; figures.py draws the figures.
"""

import csv
import itertools
import json
import math
import os
import shutil
import statistics
import tempfile
from fractions import Fraction
from pathlib import Path

from digitpairs import UserError, answers, explain, sweeps, verdicts
from digitpairs.config import Config, objective_of
from digitpairs.figures import plot_curves
from digitpairs.provenance import provenance_blocks
from digitpairs.render import Column, csv_rows, number, render_html, render_md, table
from digitpairs.stats import WILCOXON_METHODS, holm, mean_ci, paired_t, wilcoxon
from digitpairs.store import Store


def _pv(p):
    """A p-value for a table cell."""
    return "n/a" if math.isnan(p) else "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _p(p):
    if math.isnan(p):
        return "undefined (the same difference in every round)"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def correct(run: dict) -> tuple[int, int]:
    """(correct test pairs, test pairs) of a stored run: the stored count, or, in runs stored without one, the count
    recovered exactly from the accuracy (count / n_test) and the run's n_test (Config's default where its stored
    config lacks the field)."""
    n = run["config"].get("config", {}).get("n_test", Config().n_test)
    count = run.get("test_correct")
    return (count if count is not None else round(run["test_acc"] * n)), n


def summarise(spec: dict, runs: list[dict]) -> list[dict]:
    """One row per variant with runs, in the study's order: accuracy statistics over rounds, the report's figures."""
    rows = []
    for v in spec["variants"]:
        rs = sorted((r for r in runs if r["arch"] == v["name"]), key=lambda r: r["round"])
        if not rs:
            continue
        accs = {r["round"]: r["test_acc"] for r in rs}
        mean, sd, lo, hi = mean_ci(list(accs.values()), bounds=(0, 1))
        vals = [r["val_acc"] for r in rs if r["val_acc"] is not None]
        paper = v["arch"].get("report") or (None, None, None)
        rows.append({
            "arch": v["name"], "label": v["arch"]["label"], "base": v["base"], "sweep": v["sweep"],
            "head": v["arch"]["head"], "objective": objective_of(v["arch"]),
            "mean": mean, "sd": sd, "ci_low": lo, "ci_high": hi, "n_params": rs[0]["n_params"],
            "rounds": len(rs), "missing": [r for r in range(spec["rounds"]) if r not in accs],
            "val_mean": statistics.fmean(vals) if vals else None, "vals": {r["round"]: r["val_acc"] for r in rs},
            "val_sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "wall_s": statistics.fmean(r["wall_s"] for r in rs), "accs": accs,
            "correct": {r["round"]: correct(r) for r in rs},
            "report_mean": paper[0], "report_sd": paper[1], "report_params": paper[2]})
    return rows


def compare(rows: list[dict], rounds: int) -> list[dict]:
    """Paired comparisons of every two variants over the rounds (rounds share data), Holm-corrected."""
    out = []
    for a, b in itertools.combinations(rows, 2):
        if a["missing"] or b["missing"]:
            gaps = "; ".join(f"{r['label']} lacks round(s) {r['missing']}" for r in (a, b) if r["missing"])
            out.append({"a": a, "b": b, "skip": f"not compared: {gaps}"})
            continue
        if rounds < 2:
            out.append({"a": a, "b": b, "skip": "not compared: a paired test needs 2 rounds or more"})
            continue
        # each round's difference from the counts, (count_a - count_b) / n_test: the same count, the same number
        exact = [Fraction(*a["correct"][r]) - Fraction(*b["correct"][r]) for r in range(rounds)]
        if sum(exact) < 0:  # state every comparison as better minus worse
            a, b, exact = b, a, [-d for d in exact]
        diffs = [float(d) for d in exact]
        mean, _, lo, hi = mean_ci(diffs, bounds=(-1, 1))
        p_w, method = wilcoxon(diffs)
        out.append({"a": a, "b": b, "diff": mean, "lo": lo, "hi": hi, "wins": sum(d > 0 for d in diffs),
                    "n": len(diffs), "p_t": paired_t(diffs), "p_w": p_w, "w_method": method})
    done = [c for c in out if "skip" not in c]
    for key in ("p_t", "p_w"):
        for c, adj in zip(done, holm([c[key] for c in done])):
            c[key + "_holm"] = adj
    return out


def words(c: dict) -> str:
    if "skip" in c:
        return f"{c['a']['label']} vs {c['b']['label']}: {c['skip']}."
    a, b, pts = c["a"]["label"], c["b"]["label"], 100 * c["diff"]
    if math.isnan(c["p_t_holm"]):  # the same nonzero difference in every round: t is x/0
        return (f"{a} is ahead of {b} by the same {pts:.1f} points in every round: the paired t-test is undefined "
                f"(Wilcoxon p {_p(c['p_w_holm'])}).")
    if c["p_t_holm"] < 0.05:
        return f"{a} beats {b} by {pts:.1f} points, p {_p(c['p_t_holm'])}, in {c['wins']} of {c['n']} rounds."
    return (f"{a} and {b} do not differ significantly ({pts:.1f} points, p {_p(c['p_t_holm'])}); "
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


def writable_dir(out: Path) -> Path:
    """Create out if needed and check that files can be written there, before any long work."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".digitpairs-probe-{os.getpid()}"  # its own: two processes may check one folder at once
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out} ({e.strerror or e}): pass --out with a writable "
                        "folder") from None
    return out


def columns(spec: dict, rows: list[dict]) -> list[Column]:
    """The accuracy table's columns, one spec for every format (render.Column). table.csv has every column; table.md
    and the report skip empty ones."""
    has_val = any(r["val_mean"] is not None for r in rows)
    has_report = any(r["report_mean"] is not None for r in rows)

    def rounds(r):
        return f"{r['rounds']}/{spec['rounds']}" + (f" (missing {r['missing']})" if r["missing"] else "")

    return [
        Column("Architecture", lambda r: f"{r['label']} (`{r['arch']}`)", ("arch", "label")),
        Column("Test accuracy", lambda r: number(r["mean"]), ("mean",)),
        Column("SD", lambda r: number(r["sd"]), ("sd",)),
        Column("95% CI", lambda r: f"{number(r['ci_low'])} - {number(r['ci_high'])}", ("ci_low", "ci_high")),
        Column("#Params", lambda r: f"{r['n_params']:,}", ("n_params",)),
        Column("Rounds", rounds, ("rounds",)),
        Column("Val. accuracy", lambda r: number(r["val_mean"]), ("val_mean",), has_val),
        Column("s/run", lambda r: f"{r['wall_s']:.1f}", ("wall_s",)),
        Column("Report: accuracy", lambda r: "beyond the report" if r["report_mean"] is None else number(r["report_mean"]),
               ("report_mean",), has_report),
        Column("SD", lambda r: number(r["report_sd"]), ("report_sd",), has_report),
        Column("#Params", lambda r: number(r["report_params"], ","), ("report_params",), has_report),
    ]


def accuracy_table(spec: dict, rows: list[dict], out: Path) -> tuple:
    """Write table.csv and table.md; return the table's block for the report."""
    cols = columns(spec, rows)
    with open(out / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows(csv_rows(cols, rows))
    block = table(cols, rows)
    (out / "table.md").write_text(render_md([block]))
    return block


def _points(c: dict, key: str) -> str:
    return "" if "skip" in c else f"{100 * c[key]:.2f}"


COMPARISON = [  # the paired comparisons' table (rows: report.compare's)
    Column("Better", lambda c: c["a"]["label"]),
    Column("Worse", lambda c: c["b"]["label"]),
    Column("Difference (points)", lambda c: _points(c, "diff")),
    Column("95% CI (unadjusted)", lambda c: "" if "skip" in c else f"{_points(c, 'lo')} - {_points(c, 'hi')}"),
    Column("paired t p (Holm)", lambda c: "" if "skip" in c else _pv(c["p_t_holm"])),
    Column("Wilcoxon p (Holm)", lambda c: "" if "skip" in c else _pv(c["p_w_holm"])),
    Column("Wilcoxon method", lambda c: "" if "skip" in c else WILCOXON_METHODS[c["w_method"]]),
    Column("Rounds won", lambda c: c["skip"] if "skip" in c else f"{c['wins']}/{c['n']}"),
]


def comparison_blocks(rows: list[dict], comps: list[dict]) -> list[tuple]:
    """The paired comparisons as a table and in words, and the variants beyond the report against its best."""
    if not comps:
        return []
    blocks = [("h2", "Paired comparisons"), table(COMPARISON, comps),
              ("p", ("Differences are per round (rounds share their pairs), better minus worse, in percentage "
                     "points, from the counts of correct test pairs, with the t-interval of their mean (one "
                     "comparison's 95%, not adjusted for the others); p-values (scipy.stats) are Holm-corrected "
                     f"over all {len(comps)} comparisons, so a p above 0.05 may stand beside an interval that "
                     "excludes 0. Wilcoxon signed-rank: exact where a comparison's "
                     "differences have no ties and no zeros; otherwise scipy's default, all sign flips for up "
                     "to 13 rounds, else the normal approximation, zero differences dropped.")),
              ("li", [words(c) for c in comps])]
    has_report = any(r["report_mean"] is not None for r in rows)
    return blocks + (beyond(rows, comps) if has_report else [])


def figure_blocks(store: Store, study: str, rows: list[dict], runs: list[dict], out: Path) -> list[tuple]:
    """Figure 2 (the Siamese ablation steps) and the curves of every variant."""
    steps = [r for r in rows if not r["sweep"] and r["head"] == "mlp"]  # the Siamese ablation steps
    curves = store.curves(study)
    blocks = []
    if steps:
        plot_curves(curves, steps, out / "figure2.png", "Figure 2: the ablation steps")
        blocks += [("h2", "Figure 2: training L_cmp and test accuracy per epoch (mean +- SD over rounds)"),
                   ("img", "figure2.png", "Figure 2")]
    plot_curves(curves, rows, out / "curves.png", "All variants")
    blocks += [("h2", "Training curves of every variant"), ("img", "curves.png", "curves")]
    tta = {r["arch"] for r in runs if r["config"].get("config", {}).get("tta", 1) > 1}
    views = [row["label"] for row in rows if row["arch"] in tta]
    if views:  # train.py: the test-time views cost, so only the final evaluation takes them
        blocks.append(("p", (f"The last epoch's test accuracy of {', '.join(views)} is over its test-time views (the "
                             "final figure); the epochs before it are over the image alone.")))
    return blocks


def blocks_for(study: str, store: Store, out: Path) -> list[tuple]:
    """Compute every table and figure of the study (figures are written to out); return the report's blocks."""
    spec, runs = store.study_config(study), store.runs(study)
    if not runs:
        raise UserError(f"study {study!r} in {store.path} has no finished run yet: run it first")
    rows = summarise(spec, runs)
    comps = compare(rows, spec["rounds"])
    meta = runs[0]
    blocks = [("h1", f"digitpairs study `{study}`"),
              ("p", (f"{len(runs)} runs of {len(rows)} variants over {spec['rounds']} rounds, store `{store.path}`, "
                     f"digitpairs {meta['package_version']}, torch {meta['torch_version']}.")),
              ("h2", "Test accuracy over rounds"), accuracy_table(spec, rows, out),
              ("p", ("Each round draws fresh pairs and a fresh initialisation from its seed (base seed + round); "
                     "within a round every variant trains on the same pairs. SD: sample standard deviation over "
                     "rounds; 95% CI: t-interval for the mean, cut to [0, 1] where it reaches beyond."))]
    unrun = [v["name"] for v in spec["variants"] if v["name"] not in {r["arch"] for r in rows}]
    if unrun:  # interrupted before their first group finished: not in the table, not compared
        blocks.append(("p", (f"Not run yet (no finished round): {', '.join(unrun)}; the study's command trains "
                             "them.")))
    blocks += explain.rounds_blocks(rows, out)
    blocks += comparison_blocks(rows, comps)
    blocks += verdicts.blocks(spec.get("claims"), rows, comps, set(unrun))
    blocks += explain.answer_blocks(rows, answers.load(store.db, study), out, spec.get("model"))
    blocks += figure_blocks(store, study, rows, runs, out)
    blocks += sweeps.blocks(spec, rows, out)
    blocks += provenance_blocks(runs)
    blocks += [("h2", "Config"), ("code", json.dumps(spec, indent=1, sort_keys=True))]
    return blocks


def write_report(store: Store, study: str | None, out: Path) -> Path:
    """Write the tables, figures, report.md and report.html of the study (default: the newest); return report.md."""
    studies = store.studies()
    if not studies:
        raise UserError(f"the store {store.path} holds no study yet: run `digitpairs reproduce` first")
    study = study or studies[-1]
    store.study_config(study)  # an unknown study is refused before any folder is made
    out = writable_dir(out)
    # built in a folder of this process's own, then each file renamed into place: two processes that finish one
    # shared study at once each write a whole report, and a reader never sees a half-written file
    work = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        blocks = blocks_for(study, store, work)
        (work / "report.md").write_text(render_md(blocks))
        (work / "report.html").write_text(render_html(blocks, work))
        for f in sorted(work.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out / "report.md"
