"""The report's accuracy table (table.md, table.csv and its section), one column spec for every format."""

import csv
from pathlib import Path

from digitpairs.report.figures import colours, plot_rounds
from digitpairs.report.render import Column, csv_rows, render_md, table
from digitpairs.report.wording import number


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
        Column("Failed rounds", lambda r: r.get("flagged", ""), ("flagged",), any(r.get("flagged") for r in rows)),
    ]  # the failed rounds last: table.csv's earlier columns stay where they were


def accuracy_table(spec: dict, rows: list[dict], out: Path) -> tuple:
    """Write table.csv and table.md; return the table's block for the report."""
    cols = columns(spec, rows)
    with open(out / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows(csv_rows(cols, rows))
    block = table(cols, rows)
    (out / "table.md").write_text(render_md([block]))
    return block


def rounds_blocks(rows: list[dict], out: Path) -> list[tuple]:
    """The accuracy table as a picture: every round's accuracy, the mean and its interval, the report's figure."""
    plot_rounds(rows, out / "rounds.png", colours(rows))
    return [("img", "rounds.png", "test accuracy of every round"),
            ("p", ("Each dot is one round's test accuracy; the black bar spans the 95% t-interval of the mean (the "
                   "tick); a red cross marks the report's figure, where the report has one."))]
