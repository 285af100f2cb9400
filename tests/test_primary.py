"""The primary analysis on constructed data with a known answer."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from cnnstudy.report import primary

LEVELS = ("maxpool", "avgpool", "stride")


def runs(effect=None, seeds=5, noise=0.002, block=0.01, seed=0, levels=LEVELS):
    """accuracy = 0.95 + effect[variant] + a per-seed block shift + run noise."""
    rng = np.random.default_rng(seed)
    shift = rng.normal(0, block, seeds)
    rows = []
    for padding in ("same", "valid"):
        for level in levels:
            name = f"{padding}_{level}"
            for s in range(seeds):
                acc = 0.95 + (effect or {}).get(name, 0) + shift[s] + rng.normal(0, noise)
                rows.append(
                    {
                        "variant": name,
                        "padding": padding,
                        "downsample": level,
                        "seed": s,
                        "test_accuracy": acc,
                    }
                )
    return pd.DataFrame(rows)


def verdicts(data, margin=0.005):
    return primary.verdicts(primary.fit_primary(data), margin).set_index(["a", "b"])


def test_a_real_one_point_effect_wins_for_the_right_level():
    v = verdicts(runs({"same_stride": -0.01, "valid_stride": -0.01}))
    assert v.loc[("maxpool", "stride"), "verdict"] == "maxpool wins"
    assert v.loc[("avgpool", "stride"), "verdict"] == "avgpool wins"
    assert v.loc[("maxpool", "stride"), "mean_diff"] == pytest.approx(0.01, abs=0.002)
    # one verdict per row, from the closed set
    allowed = {"equivalent", "inconclusive"} | {f"{lv} wins" for lv in (*LEVELS, "same", "valid")}
    assert set(v["verdict"]) <= allowed


def test_identical_distributions_with_tight_noise_and_a_wide_margin_are_equivalent():
    v = verdicts(runs(noise=0.001), margin=0.01)
    assert (v["verdict"] == "equivalent").all()
    assert (v["equiv_ci_low"] > -0.01).all() and (v["equiv_ci_high"] < 0.01).all()
    assert (v["p_equivalence"] < 0.05).all()


def test_identical_distributions_at_n3_with_large_noise_are_inconclusive_with_a_large_mde():
    noise = 0.02
    v = verdicts(runs(seeds=3, noise=noise), margin=0.005)
    assert (v["verdict"] == "inconclusive").all()
    assert (v["mde"] > noise).all()
    assert (v["seeds_needed"] > 3).all()


def test_the_model_finds_what_paired_t_at_4_df_misses():
    """Large seed-to-seed noise in the paired differences, small run noise pooled over 20
    df: the paired t (4 df, Holm) misses a real 0.6-pt effect that the model's contrast finds."""
    effect = {"same_stride": -0.006, "valid_stride": -0.006}
    found = None
    for seed in range(40):
        data = runs(effect, noise=0.004, block=0.0, seed=seed)
        model = primary.fit_primary(data)
        v = primary.verdicts(model, 0.005).set_index(["a", "b"])
        paired = primary.paired_sensitivity(model).set_index(["a", "b"])
        if (
            v.loc[("maxpool", "stride"), "verdict"] == "maxpool wins"
            and paired.loc[("maxpool", "stride"), "p_adjusted"] > 0.05
        ):
            found = seed
            break
    assert found is not None


def test_mde_matches_statsmodels_power_solver():
    model = primary.fit_primary(runs(noise=0.004))
    v = primary.verdicts(model, 0.005)
    row = v.iloc[0]
    sd = row["se"] * math.sqrt(5)
    d = TTestPower().solve_power(effect_size=None, nobs=5, alpha=0.05, power=0.8)
    assert row["mde"] == pytest.approx(d * sd)
    need = TTestPower().solve_power(effect_size=0.005 / sd, nobs=None, alpha=0.05, power=0.8)
    assert row["seeds_needed"] == math.ceil(need)


def test_contrast_matches_the_difference_of_level_means_and_the_model_error():
    data = runs({"same_stride": -0.01}, noise=0.003)
    model = primary.fit_primary(data)
    c = primary.level_contrast(model, "padding", "same", "valid")
    means = data.groupby("padding")["test_accuracy"].mean()
    assert c.estimate == pytest.approx(means["same"] - means["valid"])
    # balanced: se = sqrt(MSE * (1/n_a + 1/n_b)) with n = 15 runs per padding level
    assert c.se == pytest.approx(math.sqrt(model.fit.mse_resid * (2 / 15)))
    assert c.df == model.fit.df_resid == 20
    lo, hi = stats.t.interval(0.95, 20, loc=c.estimate, scale=c.se)
    assert c.ci95 == pytest.approx((lo, hi))


def test_p_best_sums_to_one_and_a_dominant_variant_gets_it():
    data = runs({"valid_avgpool": 0.02}, noise=0.002)
    probs = primary.p_best(data)
    assert probs.sum() == pytest.approx(1.0)
    assert probs["valid_avgpool"] >= 0.95
    head = primary.headline(primary.fit_primary(data), data, 0.005)
    assert head["best"] == "valid_avgpool" and head["p_best"] >= 0.95
    assert head["tied"] == []  # every other variant is significantly worse
