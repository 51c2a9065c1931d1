"""A study's report, read from the store only: tables, statistics, figures; as Markdown and self-contained HTML.

The report is a list of blocks (heading, text, table, image, code) that render.py renders twice, so report.md and
report.html always say the same thing; figures.py draws the figures, and each section has its module.
"""

import json
import shutil
from pathlib import Path

from digitpairs.analysis.verify import scorecard
from digitpairs.base.errors import UserError
from digitpairs.base.files import writable_dir
from digitpairs.report import answers, claims, folder, sweeps
from digitpairs.report.accuracy import accuracy_table, rounds_blocks
from digitpairs.report.comparisons import comparison_blocks
from digitpairs.report.figures import colours, plot_curves
from digitpairs.report.provenance import provenance, provenance_blocks
from digitpairs.report.render import render_html, render_md
from digitpairs.report.scorecard import blocks as scorecard_blocks
from digitpairs.report.scorecard import to_json
from digitpairs.spec.diagnosis import DEFAULT, Diagnosis
from digitpairs.store import Store


def figure_blocks(store: Store, study: str, rows: list[dict], runs: list[dict], out: Path) -> list[tuple]:
    """Figure 2 (the Siamese ablation steps) and the curves of every variant."""
    steps = [r for r in rows if not r["sweep"] and r["head"] == "mlp"]  # the Siamese ablation steps
    curves = store.curves(study)
    blocks = []
    if steps:
        plot_curves(curves, steps, out / "figure2.png", "Figure 2: the ablation steps", colours(rows))
        blocks += [("h2", "Figure 2: training L_cmp and test accuracy per epoch (mean +- SD over rounds)"),
                   ("img", "figure2.png", "Figure 2")]
    plot_curves(curves, rows, out / "curves.png", "All variants", colours(rows))
    blocks += [("h2", "Training curves of every variant"), ("img", "curves.png", "curves")]
    measured = [row["label"] for row in rows if row["objective"] == "digits"]
    if measured:
        blocks.append(("p", (f"{', '.join(measured)} train on the digit loss alone: their L_cmp (dashed) is measured on "
                             "the training pairs, not trained on. Each variant has one colour in every figure.")))
    tta = {r["arch"] for r in runs if r["config"].get("config", {}).get("tta", 1) > 1}
    views = [row["label"] for row in rows if row["arch"] in tta]
    if views:  # train.py: the test-time views cost, so only the final evaluation takes them
        blocks.append(("p", (f"The last epoch's test accuracy of {', '.join(views)} is over its test-time views (the "
                             "final figure); the epochs before it are over the image alone.")))
    return blocks


def blocks_for(study: str, store: Store, out: Path, setting: Diagnosis = DEFAULT) -> list[tuple]:
    """Compute every table and figure of the study (figures and report.json are written to out); return the
    report's blocks."""
    spec, runs = store.study_config(study), store.runs(study)
    if not runs:
        raise UserError(f"study {study!r} in {store.path} has no finished run yet: run it first")
    found = store.answers(study)
    card = scorecard(spec, runs, store.curves(study), found, setting)
    rows, comps = card["rows"], card["comparisons"]
    for row in rows:  # the failed rounds, flagged in the table
        row["flagged"] = " ".join(str(f["round"]) for f in card["failed"] if f["variant"] == row["arch"])
    (out / "report.json").write_text(to_json(study, card, provenance(runs)))
    meta = runs[0]
    blocks = [("h1", f"digitpairs study `{study}`"),
              ("p", (f"{len(runs)} runs of {len(rows)} variants over {spec['rounds']} rounds, store `{store.path}`, "
                     f"digitpairs {meta['package_version']}, torch {meta['torch_version']}.")),
              *scorecard_blocks(card, store.curves(study), colours(rows), out),
              ("h2", "Test accuracy over rounds"), accuracy_table(spec, rows, out),
              ("p", ("Each round draws fresh pairs and a fresh initialisation from its seed (base seed + round); "
                     "within a round every variant trains on the same pairs. SD: sample standard deviation over "
                     "rounds; 95% CI: t-interval for the mean, cut to [0, 1] where it reaches beyond."))]
    unrun = [v["name"] for v in spec["variants"] if v["name"] not in {r["arch"] for r in rows}]
    if unrun:  # interrupted before their first group finished: not in the table, not compared
        blocks.append(("p", (f"Not run yet (no finished round): {', '.join(unrun)}; the study's command trains "
                             "them.")))
    blocks += rounds_blocks(rows, out)
    blocks += comparison_blocks(rows, comps)
    blocks += claims.blocks(spec.get("claims"), rows, comps, set(unrun))
    blocks += answers.blocks(rows, found, out, spec.get("model"))
    blocks += figure_blocks(store, study, rows, runs, out)
    blocks += sweeps.blocks(spec, rows, out)
    blocks += provenance_blocks(runs)
    blocks += [("h2", "Config"), ("code", json.dumps(spec, indent=1, sort_keys=True))]
    return blocks


def write_report(store: Store, study: str | None, out: Path, setting: Diagnosis = DEFAULT) -> Path:
    """Write the tables, figures, report.md and report.html of the study (default: the newest); return report.md."""
    studies = store.studies()
    if not studies:
        raise UserError(f"the store {store.path} holds no study yet: run `digitpairs reproduce` first")
    study = study or studies[-1]
    store.study_config(study)  # an unknown study is refused before any folder is made
    out = output_dir(out)
    work = folder.staging(out)  # built in a folder of this process's own, then put in place as a whole
    try:
        with store.reading():  # the runs, curves and answers of one moment
            blocks = blocks_for(study, store, work, setting)
        (work / "report.md").write_text(render_md(blocks))
        (work / "report.html").write_text(render_html(blocks, work))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    folder.replace(out, work)
    return out / "report.md"


def output_dir(out: Path) -> Path:
    """The report's folder, made and checked writable before any long work."""
    return writable_dir(out, "to the output folder", "pass --out with a writable folder")
