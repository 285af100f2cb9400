"""Does the answer depend on the training budget? Convergence flags and budget rankings.

Both read the per-epoch validation curves logged to MLflow (test accuracy exists only at the
end of training, so budgets are compared on validation accuracy, and the report says so).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

# A variant still gaining more than this (accuracy units, averaged over seeds) over the last
# quarter of its epochs has not plateaued: its ranking may change with more training. Under a
# cosine schedule the last quarter is where the learning rate anneals to 0, so every run gains
# a little there; this is the study's margin, the smallest gap it calls a difference.
RISING_THRESHOLD = 0.005
FRACTIONS = (0.25, 0.5, 1.0)


def quarter_gain(curve: pd.Series) -> float:
    """val_accuracy at the last epoch minus at the start of the last quarter (epoch-indexed)."""
    curve = curve.sort_index()
    epochs = curve.index.to_numpy()
    last = epochs.max()
    start = epochs[epochs <= last - max(1, math.ceil(len(epochs) / 4))]
    if len(start) == 0:
        return float("nan")
    return float(curve.loc[last] - curve.loc[start.max()])


def convergence(curves: pd.DataFrame, threshold: float = RISING_THRESHOLD) -> pd.DataFrame:
    """Per variant: the seed-mean validation-accuracy gain over the last quarter, its scatter
    over seeds (sd of the per-seed gains: how far one run's gain says little), and the flag."""
    rows = []
    for variant, runs in curves.groupby("variant"):
        gains = np.array(
            [
                quarter_gain(run.set_index("epoch")["val_accuracy"])
                for _, run in runs.groupby("seed")
            ]
        )
        gains = gains[np.isfinite(gains)]
        gain = float(gains.mean()) if len(gains) else float("nan")
        rows.append(
            {
                "variant": variant,
                "epochs": int(runs["epoch"].max()),
                "seeds": len(gains),
                "last_quarter_gain": gain,
                "gain_sd": float(gains.std(ddof=1)) if len(gains) > 1 else float("nan"),
                "still_rising": bool(np.isfinite(gain) and gain > threshold),
            }
        )
    return pd.DataFrame(rows)


def _at_epoch(curves: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Each (variant, seed)'s validation accuracy at ``fraction`` of its epochs."""
    last = curves.groupby(["variant", "seed"])["epoch"].transform("max")
    target = np.maximum(1, np.ceil(last * fraction))
    return curves[curves["epoch"] == target]


def _at_seconds(curves: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Each run's validation accuracy after the same wall-clock training time: the time the
    fastest variant needed for all its epochs (the last epoch that ended by then)."""
    timed = curves.sort_values("epoch").copy()
    timed["clock"] = timed.groupby(["variant", "seed"])["epoch_seconds"].cumsum()
    budget = float(
        timed.groupby(["variant", "seed"])["clock"].max().groupby("variant").median().min()
    )
    within = timed[timed["clock"] <= budget * 1.0001]
    picked = within.loc[within.groupby(["variant", "seed"])["epoch"].idxmax()]
    return picked, budget


def budgets(curves: pd.DataFrame, factors: dict[str, str], variants: pd.DataFrame) -> pd.DataFrame:
    """budgets.csv: per budget, each variant's mean validation accuracy and rank, and the
    factor contrasts (level means, each averaged over the other factor's levels).

    ``variants`` maps variant -> padding / downsample columns (one row per variant).
    """
    views = [(f"{int(f * 100)}% of epochs", _at_epoch(curves, f)) for f in FRACTIONS]
    if "epoch_seconds" in curves and curves["epoch_seconds"].notna().all():
        picked, seconds = _at_seconds(curves)
        views.append((f"equal wall-clock ({seconds:.1f}s)", picked))
    info = variants.drop_duplicates("variant").set_index("variant")
    rows = []
    for budget, view in views:
        means = view.groupby("variant")["val_accuracy"].mean().sort_values(ascending=False)
        for rank, (variant, acc) in enumerate(means.items(), start=1):
            rows.append(
                {"budget": budget, "kind": "variant", "name": variant, "value": acc, "rank": rank}
            )
        joined = view.join(info, on="variant")
        for factor, column in factors.items():
            levels = list(dict.fromkeys(info[column]))
            level_mean = joined.groupby(column)["val_accuracy"].mean()
            for a, b in itertools.combinations(levels, 2):
                rows.append(
                    {
                        "budget": budget,
                        "kind": "contrast",
                        "name": f"{factor}: {a} - {b}",
                        "value": float(level_mean.get(a, np.nan) - level_mean.get(b, np.nan)),
                        "rank": np.nan,
                    }
                )
    return pd.DataFrame(rows)


def winner_by_budget(table: pd.DataFrame) -> dict[str, str]:
    """The top-ranked variant at each budget."""
    top = table[(table["kind"] == "variant") & (table["rank"] == 1)]
    return dict(zip(top["budget"], top["name"], strict=True))
