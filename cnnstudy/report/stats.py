"""Per-variant summaries and the claims scorecard (the verdicts are ``report.primary``'s).

- Intervals over seeds are Student-t 95% intervals.
- A claim's evidence is paired by seed (level means over the other factor), Holm-adjusted
  over the claims. Directional claims: supported / refuted when significant in / against
  the claimed direction, else inconclusive. "As good as" claims: TOST at the study's margin
  (the 90% CI inside +-margin) supports, a significant deficit beyond the margin refutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from cnnstudy.report.primary import ALPHA, complete_seeds, holm

SUMMARY_METRICS = (
    "test_accuracy",
    "shift_consistency",
    "border_accuracy",
    "center_accuracy",
    "border_minus_center",
    "generalization_gap",
    "train_seconds",
    "train_images_per_second",
    "infer_images_per_second",
)
COST_COLUMNS = ("params", "macs")
FACTORS = {"padding": "padding", "downsampling": "downsample"}


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    if np.ptp(values) == 0:  # zero spread: the interval is the point
        return (float(values[0]), float(values[0]))
    low, high = stats.t.interval(level, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return float(low), float(high)


# ---------------------------------------------------------------- per-variant summary


def summary(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per variant: n, and mean/std/CI of each metric; params and MACs as they are."""
    rows = []
    for variant, group in runs.groupby("variant"):
        row: dict = {"variant": variant, "n": len(group)}
        for metric in SUMMARY_METRICS:
            if metric not in group:
                continue
            values = group[metric].to_numpy(dtype=float)
            low, high = t_interval(values)
            prefix = "" if metric == "test_accuracy" else f"{metric}_"
            row[f"{prefix}mean" if prefix else "mean_test_accuracy"] = values.mean()
            row[f"{prefix}std" if prefix else "std"] = (
                values.std(ddof=1) if len(values) > 1 else np.nan
            )
            row[f"{prefix}ci_low" if prefix else "ci_low"] = low
            row[f"{prefix}ci_high" if prefix else "ci_high"] = high
        for col in COST_COLUMNS:
            row[col] = int(group[col].iloc[0])
        rows.append(row)
    df = pd.DataFrame(rows)
    df["variant"] = pd.Categorical(df["variant"], [v for v in order if v in set(df["variant"])])
    return df.sort_values("variant").reset_index(drop=True)


# ---------------------------------------------------------------- paired comparisons


@dataclass
class Paired:
    diffs: pd.Series  # indexed by seed
    mean: float
    ci_low: float
    ci_high: float
    p_value: float
    effect_size: float
    ci90_low: float = float("nan")  # for TOST at the margin
    ci90_high: float = float("nan")


def paired_test(a: pd.Series, b: pd.Series) -> Paired:
    """a - b paired by index (seed), with a t-interval, paired t-test and Cohen's d_z."""
    seeds = a.index.intersection(b.index)
    d = (a.loc[seeds] - b.loc[seeds]).astype(float)
    low, high = t_interval(d.to_numpy())
    ci90 = t_interval(d.to_numpy(), 0.90)
    if len(d) < 2:
        return Paired(d, float(d.mean()), low, high, float("nan"), float("nan"))
    sd = d.std(ddof=1)
    if sd == 0:
        p = 1.0 if d.mean() == 0 else 0.0
        dz = 0.0 if d.mean() == 0 else float(np.sign(d.mean()) * np.inf)
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
        dz = float(d.mean() / sd)
    return Paired(d, float(d.mean()), low, high, p, dz, *ci90)


def _group_mean(runs: pd.DataFrame, downsamples: list[str], metric: str) -> pd.Series:
    return runs[runs["downsample"].isin(downsamples)].groupby("seed")[metric].mean()


def _directional(res: Paired, p_adj: float, good_if_positive: bool) -> str:
    significant = np.isfinite(p_adj) and p_adj < ALPHA and (res.ci_low > 0 or res.ci_high < 0)
    if not significant:
        return "inconclusive"
    return "supported" if (res.mean > 0) == good_if_positive else "refuted"


def _fmt_ci(res: Paired, scale: float = 100, unit: str = " pts") -> str:
    return (
        f"{res.mean * scale:+.2f}{unit} [95% CI {res.ci_low * scale:+.2f}, "
        f"{res.ci_high * scale:+.2f}], n={len(res.diffs)}"
    )


def claims(runs: pd.DataFrame, margin: float, timing: pd.DataFrame | None = None) -> pd.DataFrame:
    """claims.csv: each textbook claim, its metric, the evidence, and a verdict."""
    runs = complete_seeds(runs)
    present = set(runs["downsample"])
    pools = [d for d in ("maxpool", "avgpool") if d in present]
    rows: list[dict] = []
    tests: list[tuple[dict, Paired, bool | None]] = []

    def add(claim: str, metric: str, res: Paired | None, good_if_positive: bool | None, text: str):
        row = {"claim": claim, "metric": metric, "evidence": text, "verdict": "inconclusive"}
        rows.append(row)
        if res is not None:
            tests.append((row, res, good_if_positive))

    has_stride = "stride" in present and bool(pools)
    if has_stride:
        r = paired_test(
            _group_mean(runs, pools, "shift_consistency"),
            _group_mean(runs, ["stride"], "shift_consistency"),
        )
        add(
            "pooling gives invariance to small translations",
            "shift_consistency",
            r,
            True,
            f"pool - stride: {_fmt_ci(r)}",
        )
        r = paired_test(
            _group_mean(runs, pools, "generalization_gap"),
            _group_mean(runs, ["stride"], "generalization_gap"),
        )
        add(
            "pooling reduces overfitting",
            "generalization_gap",
            r,
            False,
            f"pool - stride gap: {_fmt_ci(r)}",
        )
        r = paired_test(
            _group_mean(runs, ["stride"], "test_accuracy"),
            _group_mean(runs, pools, "test_accuracy"),
        )
        add(
            "stride downsampling is as good as pooling",
            "test_accuracy",
            r,
            None,
            f"stride - pool: {_fmt_ci(r)}; 90% CI [{r.ci90_low * 100:+.2f}, "
            f"{r.ci90_high * 100:+.2f}] pts vs margin +-{margin * 100:.2g} pts",
        )
    if {"maxpool", "avgpool"} <= present:
        r = paired_test(
            _group_mean(runs, ["maxpool"], "test_accuracy"),
            _group_mean(runs, ["avgpool"], "test_accuracy"),
        )
        add(
            "max pooling beats average pooling",
            "test_accuracy",
            r,
            True,
            f"max - avg: {_fmt_ci(r)}",
        )
    if {"same", "valid"} <= set(runs["padding"]):
        same = runs[runs["padding"] == "same"].groupby("seed")["border_minus_center"].mean()
        valid = runs[runs["padding"] == "valid"].groupby("seed")["border_minus_center"].mean()
        r = paired_test(same, valid)
        add(
            "same padding keeps border information",
            "border_accuracy - center_accuracy",
            r,
            True,
            f"(border - centre) same minus valid: {_fmt_ci(r)}",
        )
    if has_stride and timing is not None and not timing.empty:
        macs = runs.groupby("downsample")["macs"].mean()
        level = timing["variant"].map(
            runs.drop_duplicates("variant").set_index("variant")["downsample"]
        )
        rate = (
            timing.assign(downsample=level)
            .groupby(["round", "downsample"])["train_images_per_second"]
            .mean()
            .unstack("downsample")
        )
        r = paired_test(rate["stride"], rate[pools].mean(axis=1))
        cheaper = macs["stride"] < macs[pools].mean()
        add(
            "stride is cheaper than conv + pool",
            "macs, train_images_per_second (timing pass)",
            r,
            True,
            f"MACs stride {macs['stride'] / 1e6:.2f}M vs pool {macs[pools].mean() / 1e6:.2f}M; "
            f"interleaved timing, stride - pool: {_fmt_ci(r, 1, ' img/s')} (rounds)",
        )
        rows[-1]["_macs_cheaper"] = cheaper

    p_adj = holm([res.p_value for _, res, _ in tests])
    for (row, res, good), p in zip(tests, p_adj, strict=True):
        row["p_adjusted"] = p
        if good is None:  # an equivalence claim: TOST (90% CI inside +-margin), or clearly worse
            within = -margin < res.ci90_low and res.ci90_high < margin
            worse = p < ALPHA and res.ci_high < -margin
            row["verdict"] = "supported" if within else ("refuted" if worse else "inconclusive")
        else:
            row["verdict"] = _directional(res, p, good)
        if "_macs_cheaper" in row:
            if not row.pop("_macs_cheaper"):
                row["verdict"] = "refuted"
    df = pd.DataFrame(rows)
    return df[["claim", "metric", "evidence", "verdict", "p_adjusted"]]
