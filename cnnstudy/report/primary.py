"""The primary analysis, stated before the results: which design wins, and how sure we are.

Model: ordinary least squares of test accuracy on padding x downsampling with seed as a
block (``acc ~ C(padding) * C(downsample) + C(seed)``), i.e. the two-way ANOVA with a
randomized block. Every comparison is a contrast of estimated marginal means (each level's
mean over the other factor's levels and the seeds) with the model's pooled error and its
residual degrees of freedom; p-values are Holm-adjusted over one family: the padding
comparison plus every pair of downsampling levels. Each comparison gets exactly one verdict:

- ``<level> wins``: Holm-adjusted p < ALPHA and the 95% CI excludes 0 on that level's side;
- ``equivalent``: TOST at +-margin passes (the 90% CI lies inside +-margin);
- ``inconclusive``: neither; the row gives the minimum detectable effect (80% power,
  alpha 0.05) for this n and the seeds the margin would need.

Paired t-tests per comparison are a sensitivity analysis only (``paired_sensitivity``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from cnnstudy.core.variants import PADDINGS, downsamples

ALPHA = 0.05
POWER = 0.8
FACTORS = {"padding": "padding", "downsampling": "downsample"}
VERDICT_COLUMNS = [
    "factor", "a", "b", "n_seeds", "mean_diff", "ci_low", "ci_high", "p_adjusted", "margin",
    "equiv_ci_low", "equiv_ci_high", "p_equivalence", "mde", "seeds_needed", "verdict",
    "p_value", "se", "df",
]  # fmt: skip


def complete_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Only the seeds that every variant finished, so the design stays balanced."""
    n_variants = runs["variant"].nunique()
    counts = runs.groupby("seed")["variant"].nunique()
    return runs[runs["seed"].isin(counts[counts == n_variants].index)]


def levels(runs: pd.DataFrame, column: str) -> list[str]:
    """The levels of a factor present in the runs, in registry order."""
    order = PADDINGS if column == "padding" else downsamples()
    return [lv for lv in order if lv in set(runs[column])]


# ---------------------------------------------------------------- the model


@dataclass
class Primary:
    """The fitted model, the balanced data it was fitted on, and what it contrasts."""

    fit: object  # statsmodels RegressionResults
    data: pd.DataFrame  # one row per (variant, seed): the model's observations, in order
    metric: str

    @property
    def n_seeds(self) -> int:
        return int(self.data["seed"].nunique())

    @property
    def df(self) -> float:
        return float(self.fit.df_resid)


def formula(runs: pd.DataFrame, metric: str) -> str:
    """The model's formula: factors with a single level drop out; seed is a block."""
    terms = [f"C({c})" for c in ("padding", "downsample") if runs[c].nunique() > 1]
    rhs = " * ".join(terms) or "1"
    if runs["seed"].nunique() > 1:
        rhs += " + C(seed)"
    return f"{metric} ~ {rhs}"


def fit_primary(runs: pd.DataFrame, metric: str = "test_accuracy") -> Primary:
    data = complete_seeds(runs).assign(seed=lambda d: d["seed"].astype(int).astype(str))
    data = data[["variant", "padding", "downsample", "seed", metric]].reset_index(drop=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # one seed: no residual df
        fit = smf.ols(formula(data, metric), data=data).fit()
    return Primary(fit, data, metric)


def contrast_vector(model: Primary, mask_a: np.ndarray, mask_b: np.ndarray) -> np.ndarray:
    """L such that L @ params = EMM(cells in a) - EMM(cells in b).

    The data are balanced (complete seeds, one run per variant and seed), so a level's
    estimated marginal mean is the mean of the model's design rows of that level."""
    x = np.asarray(model.fit.model.exog)
    return x[np.asarray(mask_a)].mean(axis=0) - x[np.asarray(mask_b)].mean(axis=0)


@dataclass
class Contrast:
    estimate: float
    se: float
    df: float
    p_value: float
    ci95: tuple[float, float]
    ci90: tuple[float, float]


def contrast(model: Primary, vector: np.ndarray) -> Contrast:
    if model.df < 1:  # a single seed: an estimate, but no error to judge it by
        nan = float("nan")
        return Contrast(float(vector @ model.fit.params), nan, 0.0, nan, (nan, nan), (nan, nan))
    test = model.fit.t_test(vector.reshape(1, -1))
    ci95 = tuple(float(v) for v in np.ravel(test.conf_int(alpha=ALPHA)))
    ci90 = tuple(float(v) for v in np.ravel(test.conf_int(alpha=2 * ALPHA)))
    return Contrast(
        float(np.ravel(test.effect)[0]),
        float(np.ravel(test.sd)[0]),
        float(test.df_denom),
        float(np.ravel(test.pvalue)[0]),
        ci95,  # type: ignore[arg-type]
        ci90,  # type: ignore[arg-type]
    )


def level_contrast(model: Primary, column: str, a: str, b: str) -> Contrast:
    data = model.data
    return contrast(model, contrast_vector(model, data[column] == a, data[column] == b))


def variant_contrast(model: Primary, a: str, b: str) -> Contrast:
    """Cell means a - b (each a variant), averaged over seeds."""
    names = model.data["variant"]
    return contrast(model, contrast_vector(model, names == a, names == b))


# ---------------------------------------------------------------- verdicts


def tost_p(c: Contrast, margin: float) -> float:
    """Two one-sided t-tests of |effect| < margin on the model's error: the larger p."""
    if c.se == 0:
        return 0.0 if abs(c.estimate) < margin else 1.0
    lower = stats.t.sf((c.estimate + margin) / c.se, c.df)  # H0: effect <= -margin
    upper = stats.t.cdf((c.estimate - margin) / c.se, c.df)  # H0: effect >= +margin
    return float(max(lower, upper))


def power_design(c: Contrast, n_seeds: int, margin: float) -> tuple[float, float]:
    """Minimum detectable effect (80% power, alpha 0.05, two-sided) at n_seeds, and the
    seeds the margin would need. The stated design: a paired comparison over seeds (one
    sample t on per-seed differences, statsmodels' TTestPower) whose per-seed sd is the
    one the model implies for this contrast, sd = se * sqrt(n)."""
    sd = c.se * math.sqrt(n_seeds)
    if sd == 0 or n_seeds < 2:
        return (0.0 if sd == 0 else math.inf), float(max(n_seeds, 2))
    solver = TTestPower()
    d = solver.solve_power(effect_size=None, nobs=n_seeds, alpha=ALPHA, power=POWER)
    with warnings.catch_warnings():  # no root (n < 2 already suffices): handled below
        warnings.simplefilter("ignore", ConvergenceWarning)
        need = solver.solve_power(effect_size=margin / sd, nobs=None, alpha=ALPHA, power=POWER)
    if not np.isfinite(need):  # the solver found no root: 2 seeds already suffice, or none do
        enough = solver.power(margin / sd, nobs=2, alpha=ALPHA) >= POWER
        need = 2 if enough else math.inf
    return float(d * sd), float(math.ceil(need)) if np.isfinite(need) else math.inf


def verdict(a: str, b: str, c: Contrast, p_adjusted: float, margin: float) -> str:
    """Exactly one of '<a> wins', '<b> wins', 'equivalent', 'inconclusive'."""
    if np.isfinite(p_adjusted) and p_adjusted < ALPHA:
        if c.ci95[0] > 0:
            return f"{a} wins"
        if c.ci95[1] < 0:
            return f"{b} wins"
    if -margin < c.ci90[0] and c.ci90[1] < margin:
        return "equivalent"
    return "inconclusive"


def holm(p_values: list[float]) -> list[float]:
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out.tolist()


def comparisons(model: Primary) -> list[tuple[str, str, str, str]]:
    """The family: (factor, column, a, b) for padding and every downsampling pair."""
    out = []
    for factor, column in FACTORS.items():
        for a, b in itertools.combinations(levels(model.data, column), 2):
            out.append((factor, column, a, b))
    return out


def verdicts(model: Primary, margin: float) -> pd.DataFrame:
    """verdicts.csv: one row per comparison of the family (accuracy in [0, 1] units)."""
    family = comparisons(model)
    tests = [level_contrast(model, column, a, b) for _, column, a, b in family]
    p_adj = holm([c.p_value for c in tests])
    rows = []
    for (factor, _, a, b), c, p in zip(family, tests, p_adj, strict=True):
        mde, need = power_design(c, model.n_seeds, margin)
        rows.append(
            {
                "factor": factor,
                "a": a,
                "b": b,
                "n_seeds": model.n_seeds,
                "mean_diff": c.estimate,
                "ci_low": c.ci95[0],
                "ci_high": c.ci95[1],
                "p_adjusted": p,
                "margin": margin,
                "equiv_ci_low": c.ci90[0],
                "equiv_ci_high": c.ci90[1],
                "p_equivalence": tost_p(c, margin),
                "mde": mde,
                "seeds_needed": need,
                "verdict": verdict(a, b, c, p, margin),
                "p_value": c.p_value,
                "se": c.se,
                "df": c.df,
            }
        )
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def anova(model: Primary) -> pd.DataFrame:
    """The model's type-II ANOVA table, with eta squared (empty with no residual df)."""
    if model.df < 1:
        return pd.DataFrame()
    table = anova_lm(model.fit, typ=2).rename(columns={"PR(>F)": "p_value"})
    names = {
        "C(padding)": "padding",
        "C(downsample)": "downsampling",
        "C(padding):C(downsample)": "padding x downsampling",
        "C(seed)": "seed (block)",
    }
    table.index = [names.get(i, i) for i in table.index]
    table["eta_sq"] = table["sum_sq"] / table["sum_sq"].sum()
    return table.reset_index(names="source")


# ---------------------------------------------------------------- headline


def p_best(runs: pd.DataFrame, metric: str = "test_accuracy", n_resamples: int = 4000) -> pd.Series:
    """P(best): the bootstrap probability over seeds (resampled whole, so the pairing holds)
    that each variant has the highest mean. Sums to 1."""
    wide = complete_seeds(runs).pivot_table(index="seed", columns="variant", values=metric)
    if len(wide) < 2:
        best = wide.mean().idxmax()
        return pd.Series({v: float(v == best) for v in wide.columns})

    def onehot_best(a: np.ndarray, axis: int = -1) -> np.ndarray:
        means = np.mean(a, axis=axis)  # variants first
        best = np.argmax(means, axis=0)
        shape = (-1,) + (1,) * (means.ndim - 1)
        return (np.arange(means.shape[0]).reshape(shape) == best).astype(float)

    res = stats.bootstrap(
        (wide.to_numpy(),),
        onehot_best,
        axis=0,
        n_resamples=n_resamples,
        vectorized=True,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return pd.Series(res.bootstrap_distribution.mean(axis=-1), index=wide.columns)


def headline(model: Primary, runs: pd.DataFrame, margin: float) -> dict:
    """The best variant by mean, its P(best), and the variants not distinguishable from it
    (cell contrasts on the model's error, Holm over the others)."""
    means = model.data.groupby("variant")[model.metric].mean().sort_values(ascending=False)
    best = str(means.index[0])
    others = [str(v) for v in means.index[1:]]
    tests = [variant_contrast(model, best, v) for v in others]
    p_adj = holm([c.p_value for c in tests])
    outcome = {
        v: verdict(best, v, c, p, margin) for v, c, p in zip(others, tests, p_adj, strict=True)
    }
    probs = p_best(runs, model.metric)
    return {
        "best": best,
        "best_mean": float(means.iloc[0]),
        "p_best": float(probs.get(best, np.nan)),
        "p_best_all": probs,
        "tied": [v for v, o in outcome.items() if o != f"{best} wins"],
        "beaten": [v for v, o in outcome.items() if o == f"{best} wins"],
        "n_seeds": model.n_seeds,
    }


# ---------------------------------------------------------------- sensitivity


def paired_sensitivity(model: Primary) -> pd.DataFrame:
    """The same comparisons as paired t-tests on per-seed level means (n - 1 df each),
    Holm over the same family: shown beside the primary analysis, never instead of it."""
    data = model.data
    rows = []
    for factor, column, a, b in comparisons(model):
        per_seed = data.groupby(["seed", column])[model.metric].mean().unstack(column)
        d = (per_seed[a] - per_seed[b]).dropna()
        test = stats.ttest_1samp(d, 0.0) if len(d) > 1 and d.std() > 0 else None
        ci = test.confidence_interval(1 - ALPHA) if test else (np.nan, np.nan)
        rows.append(
            {
                "factor": factor,
                "a": a,
                "b": b,
                "n_seeds": len(d),
                "mean_diff": float(d.mean()),
                "ci_low": float(ci[0]),
                "ci_high": float(ci[1]),
                "p_value": float(test.pvalue) if test else np.nan,
            }
        )
    df = pd.DataFrame(rows)
    if not df.empty:
        df["p_adjusted"] = holm(df["p_value"].tolist())
    return df
