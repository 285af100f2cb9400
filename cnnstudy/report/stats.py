"""Statistics over a sweep's replicate runs: which design wins, and how sure we are.

Rules (stated in the report too):
- Intervals over seeds are Student-t 95% intervals (with 3-5 seeds a bootstrap means little).
- A factor comparison is paired by seed: for each seed, the mean over the other factor's
  levels of a, minus the same for b. A winner needs a 95% CI that excludes 0 AND a
  Holm-adjusted p < 0.05 (paired t-test); otherwise "no significant difference".
- Effect size: Cohen's d_z = mean(paired difference) / sd(paired difference).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cnnstudy.core.variants import PADDINGS, downsamples

ALPHA = 0.05
EQUIVALENCE_MARGIN = 0.01  # accuracy points: "as good as" means the 95% CI lies within +-1 pt
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


def paired_test(a: pd.Series, b: pd.Series) -> Paired:
    """a - b paired by index (seed), with a t-interval, paired t-test and Cohen's d_z."""
    seeds = a.index.intersection(b.index)
    d = (a.loc[seeds] - b.loc[seeds]).astype(float)
    low, high = t_interval(d.to_numpy())
    if len(d) < 2:
        return Paired(d, float(d.mean()), low, high, float("nan"), float("nan"))
    sd = d.std(ddof=1)
    if sd == 0:
        p = 1.0 if d.mean() == 0 else 0.0
        dz = 0.0 if d.mean() == 0 else float(np.sign(d.mean()) * np.inf)
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
        dz = float(d.mean() / sd)
    return Paired(d, float(d.mean()), low, high, p, dz)


def level_means(runs: pd.DataFrame, column: str, level: str, metric: str) -> pd.Series:
    """Per seed, the mean of ``metric`` over the variants with ``column == level``."""
    return runs[runs[column] == level].groupby("seed")[metric].mean()


def complete_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Keep only seeds that every variant finished, so the pairing is balanced."""
    n_variants = runs["variant"].nunique()
    counts = runs.groupby("seed")["variant"].nunique()
    return runs[runs["seed"].isin(counts[counts == n_variants].index)]


def verdict_text(mean: float, low: float, high: float, p_adj: float, a: str, b: str) -> str:
    significant = np.isfinite(p_adj) and p_adj < ALPHA and (low > 0 or high < 0)
    if not significant:
        return "no significant difference"
    return f"{a if mean > 0 else b} wins"


def holm(p_values: list[float]) -> list[float]:
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out.tolist()


def factor_comparisons(runs: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """verdicts.csv: padding (same vs valid) and each downsampling pair, Holm-adjusted."""
    runs = complete_seeds(runs)
    rows = []
    for factor, column in FACTORS.items():
        levels = [lv for lv in _level_order(column) if lv in set(runs[column])]
        for a, b in itertools.combinations(levels, 2):
            res = paired_test(
                level_means(runs, column, a, metric), level_means(runs, column, b, metric)
            )
            rows.append(
                {
                    "factor": factor,
                    "a": a,
                    "b": b,
                    "n": len(res.diffs),
                    "mean_diff": res.mean,
                    "ci_low": res.ci_low,
                    "ci_high": res.ci_high,
                    "p_value": res.p_value,
                    "effect_size": res.effect_size,
                }
            )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["p_adjusted"] = holm(df["p_value"].tolist())
    df["verdict"] = [
        verdict_text(r.mean_diff, r.ci_low, r.ci_high, r.p_adjusted, r.a, r.b)
        for r in df.itertuples()
    ]
    cols = [
        "factor",
        "a",
        "b",
        "n",
        "mean_diff",
        "ci_low",
        "ci_high",
        "p_value",
        "p_adjusted",
        "effect_size",
        "verdict",
    ]
    return df[cols]


def _level_order(column: str) -> list[str]:
    return list(PADDINGS if column == "padding" else downsamples())


def paired_diffs(runs: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """Long table of the per-seed paired differences behind each comparison (for plots)."""
    runs = complete_seeds(runs)
    rows = []
    for factor, column in FACTORS.items():
        levels = [lv for lv in _level_order(column) if lv in set(runs[column])]
        for a, b in itertools.combinations(levels, 2):
            d = level_means(runs, column, a, metric) - level_means(runs, column, b, metric)
            rows += [
                {"comparison": f"{a} - {b}", "factor": factor, "seed": s, "diff": v}
                for s, v in d.dropna().items()
            ]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- ANOVA and headline


def two_way_anova(runs: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """Type-II ANOVA of padding x downsampling, with seed as a block (the runs are paired)."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    runs = complete_seeds(runs)
    if (
        runs["padding"].nunique() < 2
        or runs["downsample"].nunique() < 2
        or runs["seed"].nunique() < 2
    ):
        return pd.DataFrame()
    data = runs.assign(seed=runs["seed"].astype(str))
    model = smf.ols(f"{metric} ~ C(padding) * C(downsample) + C(seed)", data=data).fit()
    table = anova_lm(model, typ=2).rename(columns={"PR(>F)": "p_value"})
    table.index = [
        {
            "C(padding)": "padding",
            "C(downsample)": "downsampling",
            "C(padding):C(downsample)": "padding x downsampling",
            "C(seed)": "seed (block)",
        }.get(i, i)
        for i in table.index
    ]
    total = table["sum_sq"].sum()
    table["eta_sq"] = table["sum_sq"] / total
    return table.reset_index(names="source")


def headline(runs: pd.DataFrame, metric: str = "test_accuracy") -> dict:
    """The best variant by mean, and those not significantly worse (paired, Holm-adjusted)."""
    runs = complete_seeds(runs)
    means = runs.groupby("variant")[metric].mean().sort_values(ascending=False)
    best = str(means.index[0])
    by_seed = runs.pivot_table(index="seed", columns="variant", values=metric)
    others = [v for v in means.index if v != best]
    tests = [paired_test(by_seed[best], by_seed[v]) for v in others]
    p_adj = holm([t.p_value for t in tests])
    tied = [
        v
        for v, t, p in zip(others, tests, p_adj, strict=True)
        if verdict_text(t.mean, t.ci_low, t.ci_high, p, best, v) == "no significant difference"
    ]
    beaten = [v for v in others if v not in tied]
    return {
        "best": best,
        "best_mean": float(means.iloc[0]),
        "tied": tied,
        "beaten": beaten,
        "n_seeds": int(by_seed.shape[0]),
    }


# ---------------------------------------------------------------- claims


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


def claims(runs: pd.DataFrame) -> pd.DataFrame:
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
            f"stride - pool: {_fmt_ci(r)}; equivalence margin +-{EQUIVALENCE_MARGIN * 100:.0f} pt",
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
    if has_stride:
        macs = runs.groupby("downsample")["macs"].mean()
        r = paired_test(
            _group_mean(runs, ["stride"], "train_images_per_second"),
            _group_mean(runs, pools, "train_images_per_second"),
        )
        cheaper = macs["stride"] < macs[pools].mean()
        add(
            "stride is cheaper than conv + pool",
            "macs, train_images_per_second",
            r,
            True,
            f"MACs stride {macs['stride'] / 1e6:.2f}M vs pool {macs[pools].mean() / 1e6:.2f}M; "
            f"train throughput stride - pool: {_fmt_ci(r, 1, ' img/s')}",
        )
        rows[-1]["_macs_cheaper"] = cheaper

    p_adj = holm([res.p_value for _, res, _ in tests])
    for (row, res, good), p in zip(tests, p_adj, strict=True):
        row["p_adjusted"] = p
        if good is None:  # an equivalence claim: CI within the margin, or clearly worse
            within = -EQUIVALENCE_MARGIN <= res.ci_low and res.ci_high <= EQUIVALENCE_MARGIN
            worse = p < ALPHA and res.ci_high < -EQUIVALENCE_MARGIN
            row["verdict"] = "supported" if within else ("refuted" if worse else "inconclusive")
        else:
            row["verdict"] = _directional(res, p, good)
        if "_macs_cheaper" in row:
            if not row.pop("_macs_cheaper"):
                row["verdict"] = "refuted"
    df = pd.DataFrame(rows)
    return df[["claim", "metric", "evidence", "verdict", "p_adjusted"]]
