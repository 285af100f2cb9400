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

from cnnstudy.report.primary import (
    ALPHA,
    Contrast,
    Primary,
    complete_seeds,
    contrast,
    contrast_vector,
    fit_primary,
    holm,
)

SUMMARY_METRICS = (
    "test_accuracy",
    "shift_consistency",
    "shifted_accuracy",
    "border_drop",
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


NOT_TESTED = "not tested in this study"
# The border probe's reference (the unmoved digits on the larger canvas) must score like the
# test split itself, or "edge - reference" measures more than the border: at most 2 pts
# below it (about 3x one run's binomial noise on 750 test images), per variant, seed mean.
BORDER_TOLERANCE = 0.02
POOLS = ("maxpool", "avgpool")  # downsampling by a pooling layer
STRIDES = ("stride", "allconv")  # downsampling by a strided convolution


def _fmt(c: Contrast, scale: float = 100, unit: str = " pts") -> str:
    return (
        f"{c.estimate * scale:+.2f}{unit} [95% CI {c.ci95[0] * scale:+.2f}, "
        f"{c.ci95[1] * scale:+.2f}]"
    )


def _verdict_row(verdicts: pd.DataFrame, a: str, b: str) -> pd.Series | None:
    rows = verdicts[
        (verdicts["factor"] == "downsampling") & (verdicts["a"] == a) & (verdicts["b"] == b)
    ]
    if len(rows):
        return rows.iloc[0]
    rows = verdicts[
        (verdicts["factor"] == "downsampling") & (verdicts["a"] == b) & (verdicts["b"] == a)
    ]
    if not len(rows):
        return None
    r = rows.iloc[0].copy()  # flip to a - b
    r["a"], r["b"] = a, b
    r["mean_diff"], r["ci_low"], r["ci_high"] = -r["mean_diff"], -r["ci_high"], -r["ci_low"]
    r["equiv_ci_low"], r["equiv_ci_high"] = -r["equiv_ci_high"], -r["equiv_ci_low"]
    return r


def _border_reference_gap(runs: pd.DataFrame) -> float | None:
    """The largest per-variant (test - unmoved-on-canvas) accuracy, or None if no probe ran."""
    if "border_drop" not in runs or not runs["border_drop"].notna().all():
        return None
    if "centre_accuracy" not in runs:
        return float("inf")  # no reference logged: the probe cannot be checked
    gap = (runs["test_accuracy"] - runs["centre_accuracy"]).groupby(runs["variant"]).mean()
    return float(gap.max())


def _pts(r: pd.Series) -> str:
    return (
        f"{r['a']} - {r['b']}: {r['mean_diff'] * 100:+.2f} pts [95% CI {r['ci_low'] * 100:+.2f}, "
        f"{r['ci_high'] * 100:+.2f}], 90% CI [{r['equiv_ci_low'] * 100:+.2f}, "
        f"{r['equiv_ci_high'] * 100:+.2f}] (primary analysis: {r['verdict']})"
    )


def _as_good_as(r: pd.Series) -> str:
    """'a is as good as b' from the primary analysis' verdict on a vs b."""
    if r["verdict"] in ("equivalent", f"{r['a']} wins"):
        return "supported"
    return "refuted" if r["verdict"] == f"{r['b']} wins" else "inconclusive"


def _p_as_good_as(r: pd.Series) -> float:
    """The p of the test that decides 'as good as': the TOST's when it rests on equivalence
    (or is undecided), the Holm-adjusted difference test's when a level wins."""
    return float(r["p_adjusted"] if r["verdict"].endswith(" wins") else r["p_equivalence"])


def claims(
    runs: pd.DataFrame,
    verdicts: pd.DataFrame,
    margin: float,
    timing: pd.DataFrame | None = None,
    rising: list[str] | None = None,
) -> pd.DataFrame:
    """claims.csv: each textbook claim, its metric, the evidence, and a verdict.

    Accuracy claims are read off the primary analysis (``verdicts``), so they cannot
    disagree with it. Probe claims contrast level groups on the same model (OLS with the
    seed block) fitted to the probe's metric, Holm-adjusted over the probe claims. A claim
    whose variants or probe are missing from the study is "not tested in this study".
    """
    runs = complete_seeds(runs)
    present = set(runs["downsample"])
    pools = [d for d in POOLS if d in present]
    strides = [d for d in STRIDES if d in present]
    rising = list(rising or [])
    rows: list[dict] = []
    probe_tests: list[tuple[dict, Contrast, bool]] = []
    models: dict[str, Primary] = {}

    def add(claim: str, metric: str, evidence: str, verdict: str, p: float = np.nan) -> dict:
        row = {"claim": claim, "metric": metric, "evidence": evidence, "verdict": verdict,
               "p_adjusted": p}  # fmt: skip
        rows.append(row)
        return row

    def group(metric: str, column: str, a: list[str], b: list[str]) -> Contrast:
        if metric not in models:
            models[metric] = fit_primary(runs, metric)
        m = models[metric]
        data = m.data
        return contrast(m, contrast_vector(m, data[column].isin(a), data[column].isin(b)))

    def probe_claim(claim: str, metric: str, c: Contrast, positive_supports: bool, text: str):
        row = add(claim, metric, f"{text}: {_fmt(c)}", "inconclusive")
        probe_tests.append((row, c, positive_supports))
        return row

    # -- shift consistency
    claim = "pooling gives invariance to small translations"
    if pools and strides and "shift_consistency" in runs:
        c = group("shift_consistency", "downsample", pools, strides)
        probe_claim(claim, "shift_consistency (circular diagonal shifts, mean over delta)", c,
                    True, f"{'/'.join(pools)} - {'/'.join(strides)}")  # fmt: skip
    else:
        add(claim, "shift_consistency", "needs a pooling and a strided level", NOT_TESTED)
    claim = "blur pooling restores shift consistency (Zhang 2019)"
    if {"blurpool", "maxpool"} <= present and "shift_consistency" in runs:
        c = group("shift_consistency", "downsample", ["blurpool"], ["maxpool"])
        probe_claim(claim, "shift_consistency (circular diagonal shifts, mean over delta)", c,
                    True, "blurpool - maxpool")  # fmt: skip
    else:
        add(claim, "shift_consistency", "needs blurpool and maxpool variants", NOT_TESTED)

    # -- overfitting: only between converged variants
    claim = "pooling reduces overfitting"
    if pools and strides and "generalization_gap" in runs:
        c = group("generalization_gap", "downsample", pools, strides)
        involved = [v for v in rising if v.split("_", 1)[-1] in pools + strides]
        row = probe_claim(claim, "generalization_gap (train - test accuracy, at convergence)",
                          c, False, f"gap {'/'.join(pools)} - {'/'.join(strides)}")  # fmt: skip
        if involved:  # still under-fitting: a gap there is not overfitting
            row["evidence"] += f"; still rising (not converged): {', '.join(involved)}"
            row["_underfit"] = True
    else:
        add(claim, "generalization_gap", "needs a pooling and a strided level", NOT_TESTED)

    # -- accuracy: from the primary analysis
    for level in ("stride", "allconv"):
        claim = f"stride downsampling is as good as pooling ({level} vs maxpool)"
        r = _verdict_row(verdicts, level, "maxpool")
        if r is None:
            add(claim, "test_accuracy", f"needs {level} and maxpool variants", NOT_TESTED)
        else:
            add(claim, "test_accuracy", _pts(r), _as_good_as(r), _p_as_good_as(r))
    claim = ("an extra stride-2 conv matches max pooling while raising the previous conv's "
             "stride does not (All-CNN)")  # fmt: skip
    extra, raised = (
        _verdict_row(verdicts, "allconv", "maxpool"),
        _verdict_row(verdicts, "stride", "maxpool"),
    )
    if extra is None or raised is None:
        add(claim, "test_accuracy", "needs maxpool, stride and allconv variants", NOT_TESTED)
    else:
        matches, falls_short = _as_good_as(extra), raised["verdict"] == "maxpool wins"
        if matches == "supported" and falls_short:
            v = "supported"
        elif matches == "refuted" or _as_good_as(raised) == "supported":
            v = "refuted"
        else:
            v = "inconclusive"
        text = f"{_pts(extra)}; {_pts(raised)}"
        control = _verdict_row(verdicts, "convpool", "maxpool")
        if control is not None:
            text += f"; extra layer alone (ConvPool control): {_pts(control)}"
        p = max(_p_as_good_as(extra), float(raised["p_adjusted"]))  # both parts must hold
        add(claim, "test_accuracy", text, v, p)
    claim = "max pooling beats average pooling"
    r = _verdict_row(verdicts, "maxpool", "avgpool")
    if r is None:
        add(claim, "test_accuracy", "needs maxpool and avgpool variants", NOT_TESTED)
    else:
        v = {"maxpool wins": "supported", "inconclusive": "inconclusive"}.get(
            r["verdict"], "refuted"
        )
        add(claim, "test_accuracy", _pts(r), v, float(r["p_adjusted"]))

    # -- padding: the border probe's difference in differences
    claim = "same padding keeps border information"
    reference = _border_reference_gap(runs)
    if reference is not None and reference > BORDER_TOLERANCE:
        add(claim, "border_drop", "probe not valid for these networks: on the larger canvas "
            f"the unmoved digits score up to {reference * 100:.1f} pts below the test accuracy "
            f"(tolerance {BORDER_TOLERANCE * 100:g} pts), so the canvas reference is not "
            "border-free (translation sensitivity, global-pooling dilution)",
            NOT_TESTED)  # fmt: skip
    elif reference is not None and {"same", "valid"} <= set(runs["padding"]):
        c = group("border_drop", "padding", ["same"], ["valid"])
        probe_claim(claim, "border_drop = acc(content on an edge) - acc(unmoved), gap head", c,
                    True, "(edge - unmoved) same minus valid")  # fmt: skip
    else:
        add(claim, "border_drop", "needs both paddings and a gap head (the border probe moves "
            "the trained network onto a larger canvas)", NOT_TESTED)  # fmt: skip

    # -- cost
    claim = "stride is cheaper than conv + pool"
    if "stride" in present and pools and timing is not None and not timing.empty:
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
        sem = float(r.diffs.std(ddof=1) / np.sqrt(len(r.diffs))) if len(r.diffs) > 1 else np.nan
        c = Contrast(r.mean, sem, len(r.diffs) - 1, r.p_value, (r.ci_low, r.ci_high),
                     (r.ci90_low, r.ci90_high))  # fmt: skip
        row = probe_claim(claim, "macs, train_images_per_second (timing pass)", c, True,
                          f"MACs stride {macs['stride'] / 1e6:.2f}M vs pool "
                          f"{macs[pools].mean() / 1e6:.2f}M; interleaved timing, stride - pool "
                          "(img/s, paired by round)")  # fmt: skip
        row["evidence"] = row["evidence"].replace(_fmt(c), _fmt(c, 1, " img/s"))
        row["_macs_cheaper"] = bool(macs["stride"] < macs[pools].mean())
    else:
        add(claim, "macs, train_images_per_second", "needs stride, a pooling level and the "
            "timing pass", NOT_TESTED)  # fmt: skip

    # Holm over the probe claims; the cost claim (timing) is a family of its own
    probe = [t for t in probe_tests if "_macs_cheaper" not in t[0]]
    cost = [t for t in probe_tests if "_macs_cheaper" in t[0]]
    p_adj = holm([c.p_value for _, c, _ in probe]) + holm([c.p_value for _, c, _ in cost])
    for (row, c, positive), p in zip(probe + cost, p_adj, strict=True):
        row["p_adjusted"] = p
        significant = np.isfinite(p) and p < ALPHA and (c.ci95[0] > 0 or c.ci95[1] < 0)
        if significant:
            row["verdict"] = "supported" if (c.estimate > 0) == positive else "refuted"
        elif -margin < c.ci90[0] and c.ci90[1] < margin and "_macs_cheaper" not in row:
            row["verdict"] = "refuted"  # equivalent within the margin: no effect of interest
        if row.pop("_underfit", False):
            row["verdict"] = "inconclusive"
        if "_macs_cheaper" in row and not row.pop("_macs_cheaper"):
            row["verdict"] = "refuted"
    df = pd.DataFrame(rows)
    return df[["claim", "metric", "evidence", "verdict", "p_adjusted"]]
