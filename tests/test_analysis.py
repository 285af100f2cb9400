"""Statistics against scipy/statsmodels reference values, and verdict logic on constructed data."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cnnstudy.core.variants import variants
from cnnstudy.report import primary
from cnnstudy.report import stats as analysis

LEVELS = ("maxpool", "avgpool", "stride")
VARIANTS = {n: v for n, v in variants().items() if v.downsample in LEVELS}


def make_runs(effect=None, seeds=5, noise=0.002, seed=0, **metric_effects):
    """Constructed replicate runs: accuracy 0.95 + effect[variant] + seed block + noise."""
    rng = np.random.default_rng(seed)
    effect = effect or {}
    block = rng.normal(0, 0.01, seeds)  # a shared per-seed shift: what pairing removes
    rows = []
    for name, v in VARIANTS.items():
        for s in range(seeds):
            row = {
                "variant": name,
                "padding": v.padding,
                "downsample": v.downsample,
                "seed": s,
                "test_accuracy": 0.95 + effect.get(name, 0) + block[s] + rng.normal(0, noise),
                "macs": 1e6 if v.downsample != "stride" else 3e5,
                "params": 1000,
                "train_seconds": 5.0,
            }
            row["centre_accuracy"] = row["test_accuracy"]  # the border probe's reference holds
            for metric, eff in metric_effects.items():
                row[metric] = 0.5 + eff.get(name, 0) + rng.normal(0, noise)
            for metric in (
                "shift_consistency",
                "generalization_gap",
                "border_drop",
                "train_images_per_second",
            ):
                row.setdefault(metric, 0.5 + rng.normal(0, noise))
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- against references


def test_t_interval_matches_scipy_and_a_hand_value():
    x = np.array([0.91, 0.93, 0.92, 0.95, 0.94])
    low, high = analysis.t_interval(x)
    ref = stats.t.interval(0.95, 4, loc=x.mean(), scale=x.std(ddof=1) / np.sqrt(5))
    assert (low, high) == pytest.approx(ref)
    # by hand: t_{.975,4} = 2.776445
    half = 2.776445 * x.std(ddof=1) / np.sqrt(5)
    assert high - x.mean() == pytest.approx(half, rel=1e-5)


def test_paired_test_matches_ttest_rel_and_dz():
    a = pd.Series([0.91, 0.93, 0.92, 0.95, 0.94])
    b = pd.Series([0.90, 0.915, 0.925, 0.93, 0.925])
    res = analysis.paired_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert res.p_value == pytest.approx(ref.pvalue)
    d = a - b
    assert res.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    assert (res.ci_low, res.ci_high) == pytest.approx(tuple(ref.confidence_interval()))


def test_holm_matches_a_worked_example():
    # Holm: sorted p (0.01, 0.03, 0.04) x (3, 2, 1) = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    assert analysis.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def claims_of(runs, margin=0.01, timing=None, rising=None):
    verdicts = primary.verdicts(primary.fit_primary(runs), margin)
    return analysis.claims(runs, verdicts, margin, timing, rising).set_index("claim")


STRIDE_AS_GOOD = "stride downsampling is as good as pooling (stride vs maxpool)"


def test_claims_supported_refuted_and_inconclusive():
    pool = {n: 0.1 for n in VARIANTS if not n.endswith("stride")}
    runs = make_runs(shift_consistency=pool, generalization_gap={k: -v for k, v in pool.items()})
    c = claims_of(runs)
    assert c.loc["pooling gives invariance to small translations", "verdict"] == "supported"
    assert c.loc["pooling reduces overfitting", "verdict"] == "supported"
    # identical accuracy, tight noise, 1-pt margin: equivalent, so "as good as" holds and
    # "max beats avg" is refuted (no effect of interest)
    assert c.loc["max pooling beats average pooling", "verdict"] == "refuted"
    assert c.loc[STRIDE_AS_GOOD, "verdict"] == "supported"
    better = claims_of(make_runs({n: 0.02 for n in VARIANTS if "maxpool" in n}))
    assert better.loc["max pooling beats average pooling", "verdict"] == "supported"
    assert better.loc[STRIDE_AS_GOOD, "verdict"] == "refuted"
    # levels or probes the study lacks: listed, not judged
    for claim in (
        "blur pooling restores shift consistency (Zhang 2019)",
        "stride downsampling is as good as pooling (allconv vs maxpool)",
        "stride is cheaper than conv + pool",  # no timing pass given
    ):
        assert c.loc[claim, "verdict"] == "not tested in this study"


def test_flipped_rows_keep_their_intervals_around_the_estimate():
    runs = make_runs({n: 0.02 for n in VARIANTS if "stride" in n})
    verdicts = primary.verdicts(primary.fit_primary(runs), 0.005)
    for a, b in (("stride", "maxpool"), ("maxpool", "stride")):
        r = analysis._verdict_row(verdicts, a, b)
        assert r["ci_low"] < r["equiv_ci_low"] < r["mean_diff"] < r["equiv_ci_high"] < r["ci_high"]
    c = claims_of(runs, 0.005)
    assert c.loc[STRIDE_AS_GOOD, "verdict"] == "supported"  # stride wins: at least as good


def test_accuracy_claims_never_contradict_the_primary_analysis():
    runs = make_runs({n: -0.01 for n in VARIANTS if "stride" in n}, noise=0.004)
    verdicts = primary.verdicts(primary.fit_primary(runs), 0.005).set_index(["a", "b"])
    c = claims_of(runs, 0.005)
    assert verdicts.loc[("maxpool", "stride"), "verdict"] == "maxpool wins"
    assert c.loc[STRIDE_AS_GOOD, "verdict"] == "refuted"
    assert c.loc[STRIDE_AS_GOOD, "p_adjusted"] == pytest.approx(
        verdicts.loc[("maxpool", "stride"), "p_adjusted"]
    )


def test_overfitting_claim_waits_for_convergence():
    pool = {n: -0.1 for n in VARIANTS if not n.endswith("stride")}
    runs = make_runs(generalization_gap=pool)
    assert claims_of(runs).loc["pooling reduces overfitting", "verdict"] == "supported"
    c = claims_of(runs, rising=["same_stride"])  # stride still under-fitting
    assert c.loc["pooling reduces overfitting", "verdict"] == "inconclusive"
    assert "same_stride" in c.loc["pooling reduces overfitting", "evidence"]


def test_border_claim_reads_the_difference_in_differences():
    same = {n: 0.05 for n in VARIANTS if n.startswith("same")}
    runs = make_runs(border_drop=same)
    runs["centre_accuracy"] = runs["test_accuracy"] - 0.01  # the reference holds up
    c = claims_of(runs)
    assert c.loc["same padding keeps border information", "verdict"] == "supported"
    runs["centre_accuracy"] = runs["test_accuracy"] - 0.2  # it does not: the probe is invalid
    c = claims_of(runs)
    assert c.loc["same padding keeps border information", "verdict"] == "not tested in this study"
    assert "probe not valid" in c.loc["same padding keeps border information", "evidence"]
    flat = make_runs().assign(border_drop=np.nan)  # a flatten head: no border probe
    c = claims_of(flat)
    assert c.loc["same padding keeps border information", "verdict"] == "not tested in this study"


def test_noisy_claim_stays_inconclusive():
    runs = make_runs(noise=0.05, seeds=3)
    c = claims_of(runs)
    for claim in (
        "max pooling beats average pooling",
        "same padding keeps border information",
        STRIDE_AS_GOOD,
    ):
        assert c.loc[claim, "verdict"] == "inconclusive"


def test_summary_has_the_promised_columns_and_n():
    s = analysis.summary(make_runs(), list(VARIANTS))
    for col in ("variant", "n", "mean_test_accuracy", "std", "ci_low", "ci_high", "macs", "params"):
        assert col in s
    assert (s["n"] == 5).all() and (s["ci_low"] < s["mean_test_accuracy"]).all()
    assert list(s["variant"].astype(str)) == list(VARIANTS)


def test_cost_claim_reads_the_interleaved_timing_pass():
    runs = make_runs()
    rounds = [
        {"round": r, "variant": v, "train_images_per_second": 2000.0 + 3000 * ("stride" in v) + r}
        for r in range(3)
        for v in VARIANTS
    ]
    c = claims_of(runs, timing=pd.DataFrame(rounds))
    assert c.loc["stride is cheaper than conv + pool", "verdict"] == "supported"
    assert "interleaved timing" in c.loc["stride is cheaper than conv + pool", "evidence"]
