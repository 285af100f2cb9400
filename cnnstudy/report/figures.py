"""Report figures (seaborn). Colours come from the variant registry's order."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from cnnstudy.core.variants import colour_order  # noqa: E402
from cnnstudy.report.stats import t_interval  # noqa: E402

# Student-t intervals everywhere, as in the tables (seaborn's default is a bootstrap).
T95 = t_interval

sns.set_theme(style="whitegrid", context="notebook")


def palette() -> dict[str, tuple]:
    names = colour_order()
    return dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _order(df: pd.DataFrame, column: str = "variant") -> list[str]:
    present = set(df[column].astype(str))
    return [v for v in colour_order() if v in present]


def mean_ci(summary: pd.DataFrame, path: Path) -> Path:
    """Mean test accuracy +- 95% t-interval per variant."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colours = palette()
    for i, row in enumerate(summary.itertuples()):
        mean = row.mean_test_accuracy * 100
        err = [[mean - row.ci_low * 100], [row.ci_high * 100 - mean]]
        ax.errorbar(i, mean, yerr=err, fmt="o", ms=8, capsize=6, color=colours[row.variant], lw=2)
    ax.set_xticks(range(len(summary)), summary["variant"].astype(str), rotation=20)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Test accuracy per variant: mean and 95% CI over seeds (n={summary['n'].min()})")
    return _save(fig, path)


def contrasts(verdicts: pd.DataFrame, margin: float, path: Path) -> Path:
    """Each comparison's model contrast with its 95% CI (line) and 90% CI (thick), beside
    the +-margin band: inside the band with the 90% CI = equivalent."""
    labels = [f"{r.a} - {r.b}" for r in verdicts.itertuples()]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(labels)))
    ax.axvspan(
        -margin * 100, margin * 100, color="#dfe9df", label=f"+-margin ({margin * 100:g} pts)"
    )
    ax.axvline(0, color="grey", lw=1)
    for i, r in enumerate(verdicts.itertuples()):
        ax.plot([r.ci_low * 100, r.ci_high * 100], [i, i], color="#333", lw=1.2)
        ax.plot([r.equiv_ci_low * 100, r.equiv_ci_high * 100], [i, i], color="#333", lw=4)
        ax.plot(r.mean_diff * 100, i, "o", color="#c0392b")
        ax.text(ax.get_xlim()[1], i, f"  {r.verdict}", va="center", fontsize=9)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("difference in test accuracy (pts): estimate, 95% CI, 90% CI (thick)")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def tuning(tuning_runs: pd.DataFrame, chosen: dict[str, float], path: Path) -> Path:
    """Validation accuracy vs learning rate per variant: every tuning seed (dots), their
    mean (line), and the chosen point (star)."""
    order = _order(tuning_runs)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    sns.lineplot(
        data=tuning_runs, x="learning_rate", y="val_accuracy", hue="variant", hue_order=order,
        palette=palette(), errorbar=None, marker="o", ax=ax,
    )  # fmt: skip
    sns.scatterplot(
        data=tuning_runs, x="learning_rate", y="val_accuracy", hue="variant", hue_order=order,
        palette=palette(), alpha=0.4, legend=False, ax=ax,
    )  # fmt: skip
    means = tuning_runs.groupby(["variant", "learning_rate"])["val_accuracy"].mean()
    for variant, lr in chosen.items():
        if (variant, lr) in means.index:
            ax.plot(lr, means[(variant, lr)], "*", ms=16, color=palette()[variant], mec="black")
    ax.set_xscale("log")
    ax.set_title("Tuning: validation accuracy vs learning rate (star: chosen)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def budgets(table: pd.DataFrame, path: Path) -> Path:
    """Each variant's mean validation accuracy at each budget."""
    data = table[table["kind"] == "variant"].rename(columns={"name": "variant"})
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    sns.pointplot(
        data=data, x="budget", y="value", hue="variant", hue_order=_order(data),
        palette=palette(), ax=ax,
    )  # fmt: skip
    ax.set_ylabel("validation accuracy (mean over seeds)")
    ax.set_title("Does the ranking change with the training budget?")
    ax.legend(fontsize=8)
    return _save(fig, path)


def learning_curves(curves: pd.DataFrame, path: Path) -> Path:
    """Mean and 95% band over seeds of loss and accuracy, train and validation."""
    order = _order(curves)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("val_loss", "val_accuracy"), strict=True):
        sns.lineplot(
            data=curves,
            x="epoch",
            y=metric,
            hue="variant",
            hue_order=order,
            palette=palette(),
            errorbar=T95,
            marker="o",
            ax=ax,
        )
        ax.set_title(f"{metric} per epoch (band: 95% t-interval over seeds)")
    axes[0].get_legend().remove()
    axes[1].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def pareto_mask(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """True where no other point is as cheap and as accurate, and strictly better in one."""
    mask = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = (cost <= cost[i]) & (acc >= acc[i]) & ((cost < cost[i]) | (acc > acc[i]))
        mask[i] = not dominated.any()
    return mask


def cost_tradeoffs(summary: pd.DataFrame, path: Path) -> Path:
    """Accuracy against MACs, params and train time; the Pareto front is the dashed line."""
    panels = (
        ("macs", "MACs per image (millions)", 1e-6),
        ("params", "parameters (thousands)", 1e-3),
        ("train_seconds_mean", "train time per trial (s)", 1.0),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    colours = palette()
    for ax, (col, label, scale) in zip(axes, panels, strict=True):
        x = summary[col].to_numpy(dtype=float) * scale
        y = summary["mean_test_accuracy"].to_numpy(dtype=float) * 100
        front = pareto_mask(x, y)
        for xi, yi, name, on in zip(x, y, summary["variant"].astype(str), front, strict=True):
            ax.scatter(
                xi,
                yi,
                s=90 if on else 50,
                color=colours[name],
                edgecolor="black" if on else "none",
                zorder=3,
                label=name,
            )
        idx = np.argsort(x[front])
        ax.plot(x[front][idx], y[front][idx], ls="--", color="0.3", zorder=2)
        ax.set_xlabel(label)
    axes[0].set_ylabel("mean test accuracy (%)")
    axes[2].legend(fontsize=8, loc="lower right")
    fig.suptitle("Accuracy vs cost; black-edged points form the Pareto front (dashed)")
    return _save(fig, path)


def _per_step(runs: pd.DataFrame, prefix: str, name: str) -> pd.DataFrame:
    """Long table of ``<prefix><step>`` columns: one row per run and step."""
    cols = [c for c in runs if c.startswith(prefix) and c[len(prefix) :].isdigit()]
    long = runs.melt(id_vars=["variant"], value_vars=cols, var_name=name, value_name="value")
    long[name] = long[name].str[len(prefix) :].astype(int)
    return long.dropna(subset=["value"])


def probes(runs: pd.DataFrame, path: Path) -> Path:
    """The probes: shift consistency and accuracy per shift size, accuracy per distance from
    the canvas edge (gap head), and the generalization gap. Mean and 95% band over seeds."""
    order = _order(runs)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    panels = (
        ("consistency_d", "delta (px, diagonal circular shift)", "shift consistency"),
        ("shifted_accuracy_d", "delta (px, diagonal circular shift)", "accuracy on shifted images"),
        ("edge_accuracy_d", "distance of the content to the canvas edge (px)",
         "accuracy by distance to the edge"),
    )  # fmt: skip
    for ax, (prefix, xlabel, title) in zip(axes, panels, strict=False):
        long = _per_step(runs, prefix, "step")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if long.empty:
            ax.text(0.5, 0.5, "not measured\n(border probe needs a gap head)", ha="center",
                    va="center", transform=ax.transAxes)  # fmt: skip
            continue
        sns.lineplot(data=long, x="step", y="value", hue="variant", hue_order=order,
                     palette=palette(), errorbar=T95, marker="o", ax=ax, legend=False)  # fmt: skip
        ax.set_ylabel("")
    sns.pointplot(data=runs, x="variant", y="generalization_gap", order=order, hue="variant",
                  hue_order=order, palette=palette(), errorbar=T95, linestyle="none",
                  capsize=0.2, ax=axes[3], legend=False)  # fmt: skip
    axes[3].set_title("generalization gap (train - test)")
    axes[3].set_xlabel("")
    axes[3].tick_params(axis="x", rotation=35)
    handles = [plt.Line2D([], [], color=palette()[v], marker="o", label=v) for v in order]
    axes[0].legend(handles=handles, fontsize=7, loc="lower left")
    return _save(fig, path)
