"""A study's report, read from the store only: tables, statistics, figures; as Markdown and self-contained HTML.

The report is a list of blocks (heading, text, table, image, code) rendered twice, so report.md and report.html
always say the same thing.
"""

import base64
import csv
import html
import itertools
import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from digitpairs import UserError
from digitpairs.stats import holm, mean_ci, paired_t, wilcoxon
from digitpairs.store import Store


def _f(x, spec=".4f"):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _pv(p):
    """A p-value for a table cell."""
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _p(p):
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def summarise(spec: dict, runs: list[dict]) -> list[dict]:
    """One row per variant with runs, in the study's order: accuracy statistics over rounds, the report's figures."""
    rows = []
    for v in spec["variants"]:
        rs = sorted((r for r in runs if r["arch"] == v["name"]), key=lambda r: r["round"])
        if not rs:
            continue
        accs = {r["round"]: r["test_acc"] for r in rs}
        mean, sd, lo, hi = mean_ci(list(accs.values()))
        vals = [r["val_acc"] for r in rs if r["val_acc"] is not None]
        paper = v["arch"].get("report") or (None, None, None)
        rows.append({
            "arch": v["name"], "label": v["arch"]["label"], "base": v["base"], "sweep": v["sweep"],
            "head": v["arch"]["head"],
            "mean": mean, "sd": sd, "ci_low": lo, "ci_high": hi, "n_params": rs[0]["n_params"],
            "rounds": len(rs), "missing": [r for r in range(spec["rounds"]) if r not in accs],
            "val_mean": statistics.fmean(vals) if vals else None,
            "val_sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "wall_s": statistics.fmean(r["wall_s"] for r in rs), "accs": accs,
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
        diffs = [a["accs"][r] - b["accs"][r] for r in range(rounds)]
        if statistics.fmean(diffs) < 0:  # state every comparison as better minus worse
            a, b, diffs = b, a, [-d for d in diffs]
        mean, _, lo, hi = mean_ci(diffs)
        out.append({"a": a, "b": b, "diff": mean, "lo": lo, "hi": hi, "wins": sum(d > 0 for d in diffs),
                    "n": len(diffs), "p_t": paired_t(diffs) if len(diffs) > 1 else 1.0, "p_w": wilcoxon(diffs)})
    done = [c for c in out if "skip" not in c]
    for key in ("p_t", "p_w"):
        for c, adj in zip(done, holm([c[key] for c in done])):
            c[key + "_holm"] = adj
    return out


def words(c: dict) -> str:
    if "skip" in c:
        return f"{c['a']['label']} vs {c['b']['label']}: {c['skip']}."
    a, b, pts = c["a"]["label"], c["b"]["label"], 100 * c["diff"]
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


def sweeps(spec: dict, rows: list[dict]) -> dict[str, list[dict]]:
    """{sweep key: rows of the variants that sweep it}; each row gains `chosen` when the study selects on val."""
    keys = {k for v in spec["variants"] for k in v["sweep"]}
    out = {}
    for key in sorted(keys):
        group = [r for r in rows if key in r["sweep"]]
        for base in {r["base"] for r in group}:
            mine = [r for r in group if r["base"] == base]
            with_val = [r for r in mine if r["val_mean"] is not None]
            if spec.get("select") == "val" and with_val:
                best = max(with_val, key=lambda r: r["val_mean"])  # validation only: the test set never chooses
                for r in mine:
                    r["chosen"] = r is best
        out[key] = group
    return out


def plot_curves(curves: list[dict], rows: list[dict], path: Path, title: str) -> None:
    """Two panels: training L_cmp and test accuracy per epoch; mean over rounds with a +-SD band."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in rows:
        mine = [c for c in curves if c["arch"] == row["arch"]]
        epochs = sorted({c["epoch"] for c in mine})
        for ax, key in zip(axes, ("train_cmp", "test_acc")):
            vals = [[c[key] for c in mine if c["epoch"] == e] for e in epochs]
            mean = np.array([np.mean(v) for v in vals])
            sd = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals])
            line, = ax.plot(epochs, mean, label=row["label"])
            ax.fill_between(epochs, np.maximum(mean - sd, 0), mean + sd, color=line.get_color(), alpha=0.2, lw=0)
    axes[0].set(title="Training loss L_cmp (without the auxiliary term)", xlabel="epoch", ylabel="BCE")
    axes[1].set(title="Test accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(key: str, group: list[dict], path: Path) -> None:
    """Validation accuracy (mean +- SD over rounds) against the swept value, one line per architecture."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for base in dict.fromkeys(r["base"] for r in group):
        mine = [r for r in group if r["base"] == base]
        xs = [str(r["sweep"][key]) for r in mine]
        use_val = all(r["val_mean"] is not None for r in mine)
        ys = [r["val_mean"] if use_val else r["mean"] for r in mine]
        es = [(r["val_sd"] if use_val else r["sd"]) or 0 for r in mine]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"{base} ({'validation' if use_val else 'test'})")
        for x, y, r in zip(xs, ys, mine):
            if r.get("chosen"):
                ax.annotate("chosen", (x, y), textcoords="offset points", xytext=(0, 10), ha="center")
    ax.set(title=f"Sweep of {key}", xlabel=key, ylabel="accuracy (mean +- SD over rounds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def blocks_for(study: str, store: Store, out: Path) -> list[tuple]:
    """Compute every table and figure of the study (figures are written to out); return the report's blocks."""
    spec, runs = store.study_config(study), store.runs(study)
    if not runs:
        raise UserError(f"study {study!r} in {store.path} has no finished run yet: run it first")
    rows = summarise(spec, runs)
    has_val = any(r["val_mean"] is not None for r in rows)
    has_report = any(r["report_mean"] is not None for r in rows)
    head = ["Architecture", "Test accuracy", "SD", "95% CI", "#Params", "Rounds"] + (["Val. accuracy"] * has_val) \
        + ["s/run"] + (["Report: accuracy", "SD", "#Params"] * has_report)
    table = [[f"{r['label']} (`{r['arch']}`)", _f(r["mean"]), _f(r["sd"]), f"{_f(r['ci_low'])} - {_f(r['ci_high'])}",
              f"{r['n_params']:,}", f"{r['rounds']}/{spec['rounds']}" + (f" (missing {r['missing']})" * bool(r['missing']))]
             + ([_f(r["val_mean"])] * has_val) + [f"{r['wall_s']:.1f}"]
             + ((["beyond the report", "", ""] if r["report_mean"] is None else
                 [_f(r["report_mean"]), _f(r["report_sd"]), _f(r["report_params"], ",")]) * has_report) for r in rows]
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "label", "mean", "sd", "ci_low", "ci_high", "n_params", "rounds", "val_mean", "wall_s",
                    "report_mean", "report_sd", "report_params"])
        w.writerows([[r[k] for k in ("arch", "label", "mean", "sd", "ci_low", "ci_high", "n_params", "rounds",
                                     "val_mean", "wall_s", "report_mean", "report_sd", "report_params")] for r in rows])
    (out / "table.md").write_text(render_md([("table", head, table)]))
    meta = runs[0]
    blocks = [("h1", f"digitpairs study `{study}`"),
              ("p", (f"{len(runs)} runs of {len(rows)} variants over {spec['rounds']} rounds, store `{store.path}`, "
                     f"digitpairs {meta['package_version']}, torch {meta['torch_version']}.")),
              ("h2", "Test accuracy over rounds"), ("table", head, table),
              ("p", ("Each round draws fresh pairs and a fresh initialisation from its seed (base seed + round); "
                     "within a round every variant trains on the same pairs. SD: sample standard deviation over "
                     "rounds; 95% CI: t-interval for the mean."))]
    comps = compare(rows, spec["rounds"])
    if comps:
        ctable = [[c["a"]["label"], c["b"]["label"], "", "", "", "", c["skip"]] if "skip" in c else
                  [c["a"]["label"], c["b"]["label"], f"{100 * c['diff']:.2f}",
                   f"{100 * c['lo']:.2f} - {100 * c['hi']:.2f}", _pv(c["p_t_holm"]), _pv(c["p_w_holm"]),
                   f"{c['wins']}/{c['n']}"] for c in comps]
        blocks += [("h2", "Paired comparisons"),
                   ("table", ["Better", "Worse", "Difference (points)", "95% CI", "paired t p (Holm)",
                              "Wilcoxon p (Holm)", "Rounds won"], ctable),
                   ("p", ("Differences are per round (rounds share their pairs), better minus worse, in percentage "
                          f"points; p-values are Holm-corrected over all {len(comps)} comparisons."))]
        blocks += [("li", [words(c) for c in comps])]
        blocks += beyond(rows, comps) if has_report else []
    steps = [r for r in rows if not r["sweep"] and r["head"] == "mlp"]  # the Siamese ablation steps
    curves = store.curves(study)
    if steps:
        plot_curves(curves, steps, out / "figure2.png", "Figure 2: the ablation steps")
        blocks += [("h2", "Figure 2: training L_cmp and test accuracy per epoch (mean +- SD over rounds)"),
                   ("img", "figure2.png", "Figure 2")]
    plot_curves(curves, rows, out / "curves.png", "All variants")
    blocks += [("h2", "Training curves of every variant"), ("img", "curves.png", "curves")]
    for key, group in sweeps(spec, rows).items():
        plot_sweep(key, group, out / f"sweep_{key}.png")
        chosen = [r for r in group if r.get("chosen")]
        stable = [[str(r["sweep"][key]), r["base"], _f(r["val_mean"]), _f(r["val_sd"]), _f(r["mean"]), _f(r["sd"]),
                   "yes" if r.get("chosen") else ""] for r in group]
        blocks += [("h2", f"Sweep of {key}"), ("img", f"sweep_{key}.png", f"sweep of {key}"),
                   ("table", [key, "Architecture", "Val. accuracy", "SD", "Test accuracy", "SD", "Chosen"], stable)]
        if chosen:
            blocks += [("p", " ".join(f"Chosen on validation accuracy for {r['base']}: {key} = {r['sweep'][key]} "
                                      f"(validation {_f(r['val_mean'])}); test accuracy there {_f(r['mean'])} +- "
                                      f"{_f(r['sd'])}." for r in chosen))]
        elif spec.get("select") == "val":
            blocks += [("p", "No validation split (n_val = 0): nothing is chosen.")]
    blocks += [("h2", "Config"), ("code", json.dumps(spec, indent=1, sort_keys=True))]
    return blocks


def render_md(blocks: list[tuple]) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            lines += ["#" * int(kind[1]) + " " + rest[0], ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "li":
            lines += [f"- {item}" for item in rest[0]] + [""]
        elif kind == "table":
            head, rows = rest
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{rest[1]}]({rest[0]})", ""]
        elif kind == "code":
            lines += ["```json", rest[0], "```", ""]
    return "\n".join(lines)


def render_html(blocks: list[tuple], out: Path) -> str:
    """One self-contained page: the figures are embedded as data URIs."""
    esc = html.escape
    parts = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{esc(rest[0])}</p>")
        elif kind == "li":
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "table":
            head, rows = rest
            parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
                         + "</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((out / rest[0]).read_bytes()).decode()
            parts.append(f'<figure><img alt="{esc(rest[1])}" src="data:image/png;base64,{data}"></figure>')
        elif kind == "code":
            parts.append(f"<details><summary>config</summary><pre>{esc(rest[0])}</pre></details>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:"
             "collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}td:first-child,"
             "th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>digitpairs report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def write_report(store: Store, study: str | None, out: Path) -> Path:
    """Write the tables, figures, report.md and report.html of the study (default: the newest); return report.md."""
    studies = store.studies()
    if not studies:
        raise UserError(f"the store {store.path} holds no study yet: run `digitpairs reproduce` first")
    study = study or studies[-1]
    out = writable_dir(out)
    blocks = blocks_for(study, store, out)
    (out / "report.md").write_text(render_md(blocks))
    (out / "report.html").write_text(render_html(blocks, out))
    return out / "report.md"
