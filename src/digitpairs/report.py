"""Tables, statistics and figures of a study, read from the store only."""

import csv
import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from digitpairs import UserError
from digitpairs.models import ARCHS
from digitpairs.store import Store


def summarise(runs: list[dict]) -> list[dict]:
    """One row per architecture (registry order, then by name): mean, SD over rounds, #params, the report's."""
    order = {name: i for i, name in enumerate(ARCHS)}
    by_arch: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: (order.get(r["arch"], len(order)), r["arch"])):
        by_arch.setdefault(r["arch"], []).append(r)
    rows = []
    for arch, rs in by_arch.items():
        accs = [r["test_acc"] for r in sorted(rs, key=lambda r: r["round"])]
        meta = rs[0]["config"]["arch"]
        paper = meta.get("report") or (None, None, None)
        rows.append({
            "arch": arch, "label": meta["label"], "mean": statistics.fmean(accs),
            "sd": statistics.stdev(accs) if len(accs) > 1 else float("nan"), "n_params": rs[0]["n_params"],
            "rounds": len(accs), "wall_s": statistics.fmean(r["wall_s"] for r in rs),
            "report_mean": paper[0], "report_sd": paper[1], "report_params": paper[2]})
    return rows


def _fmt(x, spec):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def write_tables(rows: list[dict], out: Path) -> None:
    cols = ["arch", "label", "mean", "sd", "n_params", "rounds", "wall_s", "report_mean", "report_sd", "report_params"]
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
    lines = ["| Architecture | Test accuracy | SD | #Params | Rounds | s/run | Report: accuracy | SD | #Params |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} (`{r['arch']}`) | {r['mean']:.4f} | {_fmt(r['sd'], '.4f')} | {r['n_params']:,} "
                     f"| {r['rounds']} | {r['wall_s']:.1f} | {_fmt(r['report_mean'], '.4f')} "
                     f"| {_fmt(r['report_sd'], '.4f')} | {_fmt(r['report_params'], ',')} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def figure2(curves: list[dict], labels: dict[str, str], path: Path) -> None:
    """Two panels: training L_cmp and test accuracy per epoch; mean over rounds with a +-SD band."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for arch, label in labels.items():
        rows = [c for c in curves if c["arch"] == arch]
        epochs = sorted({c["epoch"] for c in rows})
        for ax, key in zip(axes, ("train_cmp", "test_acc")):
            vals = np.array([[c[key] for c in rows if c["epoch"] == e] for e in epochs], dtype=object)
            mean = np.array([np.mean(v) for v in vals])
            sd = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals])
            line, = ax.plot(epochs, mean, label=label)
            low = np.maximum(mean - sd, 0)  # losses and accuracies are never negative
            ax.fill_between(epochs, low, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)
    axes[0].set(title="Training loss L_cmp (without the auxiliary term)", xlabel="epoch", ylabel="BCE")
    axes[1].set(title="Test accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def writable_dir(out: Path) -> Path:
    """Create out if needed and check that files can be written there, before any long work."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".digitpairs-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out} ({e.strerror or e}): pass --out with a writable "
                        "folder") from None
    return out


def write_report(store: Store, study: str | None, out: Path) -> Path:
    """Write table.md, table.csv, figure2.png and report.md for the study (default: the newest); return report.md."""
    studies = store.studies()
    if not studies:
        raise UserError(f"the store {store.path} holds no study yet: run `digitpairs reproduce` first")
    study = study or studies[-1]
    cfg = store.study_config(study)
    runs = store.runs(study)
    if not runs:
        raise UserError(f"study {study!r} in {store.path} has no finished run yet: run it first")
    out = writable_dir(out)
    rows = summarise(runs)
    write_tables(rows, out)
    figure2(store.curves(study), {r["arch"]: r["label"] for r in rows}, out / "figure2.png")
    meta = runs[0]
    lines = [
        f"# digitpairs study `{study}`", "",
        (f"{len(runs)} runs ({len(rows)} architectures), store `{store.path}`, "
         f"digitpairs {meta['package_version']}, torch {meta['torch_version']}."), "",
        "## Table 1: test accuracy over rounds (mean, SD), beside the report's", "",
        (out / "table.md").read_text(), "",
        ("Each round draws fresh pairs and a fresh initialisation from its seed (base seed + round); within a round "
         "every architecture trains on the same pairs. SD is the sample standard deviation over rounds."), "",
        "## Figure 2: training L_cmp and test accuracy per epoch (mean +- SD over rounds)", "",
        "![Figure 2](figure2.png)", "",
        "## Config", "", "```json", json.dumps(cfg, indent=2, sort_keys=True), "```", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
