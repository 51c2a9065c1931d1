"""The report's figures, drawn from rows and curves read from the store (PNG files). Figures are made without
pyplot, so drawing them never changes matplotlib's backend (a notebook that imports the report keeps its own)."""

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure


def colours(rows: list[dict]) -> dict[str, str]:
    """One colour per variant of a study, by its place in the study, the same in every figure of its report."""
    palette = [f"C{i}" for i in range(10)] if len(rows) <= 10 else [matplotlib.colormaps["tab20"](i % 20)
                                                                      for i in range(len(rows))]
    return {row["arch"]: palette[i % len(palette)] for i, row in enumerate(rows)}


def plot_curves(curves: list[dict], rows: list[dict], path: Path, title: str, colour: dict[str, str]) -> None:
    """Two panels: training L_cmp and test accuracy per epoch; mean over rounds with a +-SD band. A variant that
    does not train on L_cmp (objective "digits") has its L_cmp drawn dashed, as measured, not trained on."""
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for row in rows:
        mine = [c for c in curves if c["arch"] == row["arch"]]
        epochs = sorted({c["epoch"] for c in mine})
        untrained = row.get("objective") == "digits"
        for ax, key in zip(axes, ("train_cmp", "test_acc")):
            vals = [[c[key] for c in mine if c["epoch"] == e] for e in epochs]
            mean = np.array([np.mean(v) for v in vals])
            sd = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals])
            dashed = untrained and key == "train_cmp"
            label = row["label"] + (" (L_cmp measured, not trained on)" if dashed else "")
            ax.plot(epochs, mean, label=label, color=colour[row["arch"]], ls="--" if dashed else "-")
            top = 1 if key == "test_acc" else np.inf  # the band within what the values can be
            ax.fill_between(epochs, np.maximum(mean - sd, 0), np.minimum(mean + sd, top), color=colour[row["arch"]],
                            alpha=0.2, lw=0)
    axes[0].legend(loc="upper right", fontsize=7)
    axes[0].set(title="Training loss L_cmp (without the auxiliary term)", xlabel="epoch", ylabel="BCE")
    axes[1].set(title="Test accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_sweep(key: str, group: list[dict], path: Path) -> None:
    """Validation accuracy (mean +- SD over rounds) against the swept value, one line per variant that differs only in
    it (rows: sweeps.chosen's, with their family)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for base in dict.fromkeys(r["family"] for r in group):
        mine = [r for r in group if r["family"] == base]
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


def plot_rounds(rows: list[dict], path: Path, colour: dict[str, str]) -> None:
    """The accuracy table as a picture, one line per variant: each round's test accuracy as a dot, the mean with its
    95% interval, and the report's figure as a marker."""
    n = len(rows)
    fig = Figure(figsize=(9, min(0.45 * n + 1.8, 60)), layout="constrained")
    ax = fig.subplots()
    for y, row in enumerate(rows):
        accs = [row["accs"][r] for r in sorted(row["accs"])]
        jitter = np.linspace(-0.15, 0.15, len(accs)) if len(accs) > 1 else [0.0]  # rounds apart, in round order
        ax.scatter(accs, y + np.asarray(jitter), s=14, color=colour[row["arch"]], alpha=0.6, lw=0,
                   label="a round" if y == 0 else None)
        if row["ci_low"] is not None and not np.isnan(row["ci_low"]):
            ax.hlines(y, row["ci_low"], row["ci_high"], color="black", lw=1.5,
                      label="mean and 95% interval" if y == 0 else None)
        ax.plot(row["mean"], y, "|", color="black", ms=14, mew=2)
        if row["report_mean"] is not None:
            ax.plot(row["report_mean"], y, "x", color="tab:red", ms=8, mew=2,
                    label="the report's figure" if not any(r["report_mean"] is not None for r in rows[:y]) else None)
    ax.set_yticks(range(n), [r["label"] for r in rows], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)  # the table's order, top to bottom
    ax.set(xlabel="test accuracy", title="Test accuracy of every round")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncol=3, frameon=False)
    fig.savefig(path, dpi=110)


def plot_grids(grids: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    """Comparison accuracy by (first digit, second digit): one 10x10 heatmap per (title, correct, pairs), each cell
    annotated with its accuracy in percent (empty: no pair)."""
    fig = Figure(figsize=(6.2 * len(grids), 5.6))
    axes = fig.subplots(1, len(grids), squeeze=False)
    acc_all = [right / np.maximum(total, 1) for _, right, total in grids]
    low = min(float(a[t > 0].min()) if (t > 0).any() else 1.0 for a, (_, _, t) in zip(acc_all, grids))
    vmin = min(0.9, np.floor(low * 10) / 10)  # a common scale, fine enough that the errors stand out
    for ax, acc, (title, _, total) in zip(axes[0], acc_all, grids):
        shown = np.where(total > 0, acc, np.nan)
        im = ax.imshow(shown, cmap="viridis", vmin=vmin, vmax=1.0)
        for i in range(10):
            for j in range(10):
                if total[i, j]:
                    dark = shown[i, j] < vmin + 0.6 * (1 - vmin)
                    ax.text(j, i, f"{100 * shown[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
        ax.set(title=title, xlabel="second digit", ylabel="first digit", xticks=range(10), yticks=range(10))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="comparison accuracy")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_gallery(pairs: list[dict], title: str, path: Path) -> None:
    """Wrong test pairs, each as its two images side by side with the true digits, the digits read and
    P(first <= second); pairs: {"x": (2, S, S) pixels 0..255, "true", "read": (a, b), "p_le", "round"}."""
    cols = 4
    rows = -(-len(pairs) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.1 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, pairs):
        a, b = p["x"]
        gap = np.full((a.shape[0], max(1, a.shape[0] // 7)), 128.0)
        ax.imshow(np.concatenate([a, gap, b], axis=1), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {p['true'][0]}, {p['true'][1]}   read {p['read'][0]}, {p['read'][1]}\n"
                     f"P(a <= b) {p['p_le']:.2f}   round {p['round']}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_failed(curves: list[dict], failed: list[dict], path: Path, colour: dict[str, str]) -> None:
    """The flagged rounds' training loss and test accuracy per epoch (dashed), each beside the mean of its
    variant's other rounds (solid), in the variant's colour."""
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    bad = {(f["variant"], f["round"]) for f in failed}
    for variant in dict.fromkeys(f["variant"] for f in failed):
        mine = [c for c in curves if c["arch"] == variant]
        epochs = sorted({c["epoch"] for c in mine})
        for ax, key in zip(axes, ("train_loss", "test_acc")):
            others = [[c[key] for c in mine if c["epoch"] == e and (variant, c["round"]) not in bad] for e in epochs]
            if all(others):
                ax.plot(epochs, [np.mean(v) for v in others], color=colour[variant], label=f"{variant}: other rounds")
            for f in (f for f in failed if f["variant"] == variant):
                run = sorted((c for c in mine if c["round"] == f["round"]), key=lambda c: c["epoch"])
                ax.plot([c["epoch"] for c in run], [c[key] for c in run], color=colour[variant], ls="--",
                        label=f"{variant}: round {f['round']}")
    axes[0].set(title="Training loss (the objective)", xlabel="epoch")
    axes[1].set(title="Test accuracy", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("Failed rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
