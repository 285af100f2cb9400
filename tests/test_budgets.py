"""Convergence flags and budget rankings on constructed curves with a known answer."""

import numpy as np
import pandas as pd
import pytest

from cnnstudy.report.budgets import RISING_THRESHOLD, budgets, convergence, winner_by_budget


def curves(shapes: dict, epochs: int = 12, seeds: int = 3, seconds: dict | None = None):
    rng = np.random.default_rng(0)
    rows = []
    for variant, f in shapes.items():
        for seed in range(seeds):
            for e in range(1, epochs + 1):
                rows.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "epoch": e,
                        "val_accuracy": f(e / epochs) + rng.normal(0, 0.0005),
                        "epoch_seconds": (seconds or {}).get(variant, 1.0),
                    }
                )
    return pd.DataFrame(rows)


def test_flag_fires_on_a_still_rising_curve_and_not_on_a_plateau():
    c = curves(
        {
            "same_rising": lambda t: 0.80 + 0.15 * t,  # +3.75 pts over the last quarter
            "same_plateau": lambda t: 0.97 - 0.3 * np.exp(-12 * t),  # < 0.1 pt at the end
        }
    )
    flags = convergence(c).set_index("variant")
    assert flags.loc["same_rising", "still_rising"]
    assert flags.loc["same_rising", "last_quarter_gain"] > 5 * RISING_THRESHOLD
    assert not flags.loc["same_plateau", "still_rising"]
    assert abs(flags.loc["same_plateau", "last_quarter_gain"]) < RISING_THRESHOLD


def test_flag_reads_the_seed_mean_gain_and_reports_its_scatter():
    """Last-quarter gains of +1.8, +0.1, 0.0 pts: mean 0.63 > 0.5, flagged (one seed's jump
    still counts: a missed flag would rank an unconverged variant); +0.3, +0.4, +0.5: not."""
    jumps = {"same_jump": [0.018, 0.001, 0.0], "same_small": [0.003, 0.004, 0.005]}
    rows = [
        {"variant": v, "seed": seed, "epoch": e, "val_accuracy": 0.95 + (g if e == 8 else 0.0)}
        for v, gains in jumps.items()
        for seed, g in enumerate(gains)
        for e in range(1, 9)
    ]
    flags = convergence(pd.DataFrame(rows)).set_index("variant")
    assert flags.loc["same_jump", "still_rising"] and not flags.loc["same_small", "still_rising"]
    assert flags.loc["same_jump", "last_quarter_gain"] == pytest.approx(0.019 / 3)
    assert flags.loc["same_jump", "gain_sd"] == pytest.approx(np.std([0.018, 0.001, 0], ddof=1))
    assert flags.loc["same_small", "gain_sd"] == pytest.approx(0.001)
    assert (flags["seeds"] == 3).all()


def test_winner_changes_with_budget_and_equal_wall_clock():
    # fast learner wins early; slow learner overtakes by the end; the slow one is 3x slower
    c = curves(
        {
            "same_fast": lambda t: 0.90 + 0.02 * t,
            "same_slow": lambda t: 0.70 + 0.28 * t,
        },
        seconds={"same_fast": 1.0, "same_slow": 3.0},
    )
    info = pd.DataFrame(
        {"variant": ["same_fast", "same_slow"], "padding": "same", "downsample": ["a", "b"]}
    )
    table = budgets(c, {"downsampling": "downsample"}, info)
    winners = winner_by_budget(table)
    assert winners["25% of epochs"] == "same_fast"
    assert winners["100% of epochs"] == "same_slow"
    clock = [k for k in winners if k.startswith("equal wall-clock")]
    assert clock and winners[clock[0]] == "same_fast"  # slow had 4 of its 12 epochs by then
    contrast = table[(table["kind"] == "contrast") & (table["budget"] == "100% of epochs")]
    assert contrast["name"].tolist() == ["downsampling: a - b"]
    assert contrast["value"].iloc[0] < 0
